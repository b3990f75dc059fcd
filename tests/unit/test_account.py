import uuid
from datetime import datetime, timedelta, timezone

import pytest

from domain.account import Account, AccountSuspended, EmailClaim, InvalidEmail, normalise_email
from domain.money import InvalidCreditGrant
from domain.credentials import hash_password, new_api_key, new_management_token, verify_password


def test_credits_accumulate_and_bad_grants_change_nothing():
    account = Account(email="a@example.com", password_hash="x", token_hash="t")
    account.grant_credits(5 * 10**12, "welcome", "operator")
    for amount, reason in [(0, "zero"), (-1, "negative"), (10**19, "too much"), (1, "  ")]:
        with pytest.raises(InvalidCreditGrant):
            account.grant_credits(amount, reason, "operator")
    assert account.credits == 5 * 10**12
    assert [type(e).__name__ for e in account.collect_events()] == ["Registered", "CreditsGranted"]


def test_email_claim_id_is_derived_from_the_normalised_email():
    assert EmailClaim.create_id(normalise_email(" A@Example.COM ")) == EmailClaim.create_id("a@example.com")


@pytest.mark.parametrize("bad", ["", "no-at-sign", "a@b", "a b@c.d", "x" * 300 + "@a.co"])
def test_bad_emails_are_refused(bad):
    with pytest.raises(InvalidEmail):
        normalise_email(bad)


def test_passwords_verify_only_with_the_right_password():
    stored = hash_password("correct horse")
    assert verify_password("correct horse", stored)
    assert not verify_password("wrong horse", stored)
    assert not verify_password("correct horse", "garbage")


def test_secrets_are_prefixed_and_only_their_hash_is_kept():
    key = new_api_key()
    assert key.plain.startswith("mk-") and len(key.plain) > 40
    assert key.plain not in key.hash and key.prefix == key.plain[:10]
    assert new_management_token().plain.startswith("mt-")
    assert new_api_key().plain != key.plain


def test_tokens_are_revoked_one_by_one_or_all_by_a_password_change_and_only_live_ones_renew():
    later = datetime.now(timezone.utc) + timedelta(days=30)
    account = Account(email="a@example.com", password_hash="h1", token_hash="t1", token_expires_at=later)
    account.issue_token("t2", later)
    account.revoke_token("t1")
    account.revoke_token("t1")  # idempotent: no second event
    account.renew_token("t1", later)  # revoked: not renewed
    account.renew_token("t2", later)
    assert account.token_hashes == {"t2"}
    account.rehash_password("h1-upgraded")
    assert account.token_hashes == {"t2"} and account.password_hash == "h1-upgraded"
    account.change_password("h2", "t3", later)
    assert account.token_hashes == {"t3"} and account.password_hash == "h2"
    assert [type(e).__name__ for e in account.collect_events()] == [
        "Registered",
        "TokenIssued",
        "TokenRevoked",
        "TokenRenewed",
        "PasswordRehashed",
        "PasswordChanged",
        "TokenIssued",
    ]


def test_an_operator_takes_back_at_most_what_is_neither_spent_nor_reserved():
    account = Account(email="a@example.com", password_hash="h", token_hash="t")
    account.grant_credits(10 * 10**12, "welcome", "operator", "token")
    account.lease(uuid.uuid4(), 4 * 10**12, uuid.uuid4(), datetime.now(timezone.utc) + timedelta(minutes=1))
    with pytest.raises(InvalidCreditGrant, match=r"at most 6\.000000 USD"):
        account.take_back_credits(6 * 10**12 + 1, "too much", "token")
    with pytest.raises(InvalidCreditGrant, match="reason"):
        account.take_back_credits(10**12, "  ", "token")
    assert account.credits == 10 * 10**12  # refusals changed nothing
    account.take_back_credits(6 * 10**12, "granted twice", "token")
    assert account.credits == 4 * 10**12 and account.leasable == 0
    debit = account.collect_events()[-1]
    assert isinstance(debit, Account.CreditsDebited) and debit.operator == "token" and debit.debited_by == "operator"


def test_suspension_needs_a_reason_and_names_the_operator():
    account = Account(email="a@example.com", password_hash="h", token_hash="t")
    with pytest.raises(InvalidCreditGrant, match="reason"):
        account.suspend("", "token")
    account.check_active()
    account.suspend("chargebacks", "0190-op")
    with pytest.raises(AccountSuspended, match="chargebacks"):
        account.check_active()
    account.resume("paid", "token")
    account.check_active()
    suspended, resumed = account.collect_events()[-2:]
    assert (suspended.operator, resumed.operator) == ("0190-op", "token")
