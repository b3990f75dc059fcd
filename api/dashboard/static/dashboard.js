// Mesh dashboard: small enhancements; every page works without them where that is cheap.
"use strict";

// A copy button copies the text of the element its data-copy names.
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  const text = source.value !== undefined ? source.value : source.textContent;
  try {
    await navigator.clipboard.writeText(text.trim());
    button.textContent = "Copied";
  } catch (_) {
    const range = document.createRange();
    range.selectNodeContents(source);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
  setTimeout(() => { button.textContent = "Copy"; }, 2000);
});

// The template editor lists the {{variables}} its messages use as you type.
function listVariables() {
  const out = document.getElementById("detected");
  if (!out) return;
  const names = [];
  document.querySelectorAll("textarea[name=content]").forEach((area) => {
    for (const match of area.value.matchAll(/\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}/g)) {
      if (!names.includes(match[1])) names.push(match[1]);
    }
  });
  out.textContent = names.length ? names.join(", ") : "none";
}
document.addEventListener("input", (event) => {
  if (event.target.matches("textarea[name=content]")) listVariables();
});
document.addEventListener("DOMContentLoaded", listVariables);

// Card top-up (its own page, /billing/pay/<payment intent>, the only one that loads stripe.js): stripe.js tokenises the card (the number never reaches Mesh), Mesh charges it for the
// payment it started, and stripe.js runs 3-D Secure when the bank asks for it (confirmCardPayment).
async function payByCard(form) {
  const box = form.closest("[data-payment-intent]");
  const status = box.querySelector("[role=status]");
  const button = form.querySelector("button");
  button.disabled = true;
  status.textContent = "Paying…";
  try {
    const { token, error } = await box.stripe.createToken(box.card);
    if (error) throw new Error(error.message || "the card was refused");
    const csrf = form.querySelector("input[name=_csrf_token]").value;
    const answer = await fetch(`/billing/topups/${box.dataset.paymentIntent}/card`, {
      method: "POST", headers: { "content-type": "application/json", "x-csrftoken": csrf },
      body: JSON.stringify({ token: token.id }),
    }).then((r) => r.json());
    if (answer.error) throw new Error(answer.error);
    if (answer.status === "requires_action") {
      const result = await box.stripe.confirmCardPayment(answer.client_secret);
      if (result.error) throw new Error(result.error.message || "authentication failed");
    }
    status.textContent = "Payment received; the balance updates when Stripe confirms it.";
    status.classList.add("good");
    setTimeout(() => { location.href = "/billing"; }, 1000);
  } catch (err) {
    status.textContent = err.message;
    status.classList.add("bad");
    button.disabled = false;
  }
}

function mountCard(box) {
  if (box.card || !window.Stripe) return;
  box.stripe = window.Stripe(box.dataset.key);
  box.card = box.stripe.elements().create("card");
  box.card.mount(box.querySelector(".card-element"));
  box.querySelector("form").addEventListener("submit", (event) => {
    event.preventDefault();
    payByCard(event.target);
  });
}
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-payment-intent]").forEach(mountCard);
});
