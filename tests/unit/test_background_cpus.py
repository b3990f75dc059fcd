"""Which CPUs the embedded servers and the projection worker may use."""

import os

import pytest

from api.embedded import background_cpus


@pytest.fixture
def four_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})


def test_auto_leaves_the_first_cpu_to_the_gateway(four_cpus):
    assert background_cpus("auto") == {1, 2, 3}


def test_auto_on_one_cpu_restricts_nothing(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {5})
    assert background_cpus("auto") is None


def test_all_restricts_nothing(four_cpus):
    assert background_cpus("all") is None


def test_a_cpu_list_is_taken_as_given(four_cpus):
    assert background_cpus("1-2") == {1, 2}
    assert background_cpus("0, 3") == {0, 3}


@pytest.mark.parametrize("spec", ["2-x", "one", "", "1-"])
def test_a_list_that_is_not_one_says_what_is_allowed(four_cpus, spec):
    with pytest.raises(ValueError, match="expected 'auto', 'all' or a CPU list"):
        background_cpus(spec)


def test_cpus_this_process_may_not_use_are_refused(four_cpus):
    with pytest.raises(ValueError, match="may use CPUs 0,1,2,3 only"):
        background_cpus("2-5")
