"""--leader-elect's settings: client-go's timing rules, and the flags that set them."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from virtual_kubelet.cli import main
from virtual_kubelet.cli.settings import duration
from virtual_kubelet.node.leader import ElectionSettings, default_identity, lease_name


def test_defaults_are_client_go_s() -> None:
    settings = ElectionSettings(node_name="n")
    assert (settings.lease_duration, settings.renew_deadline, settings.retry_period) == (15, 10, 2)
    assert lease_name("n") == "virtual-kubelet-n"
    assert default_identity() != default_identity()  # two agents on one host never share one


def test_flag_defaults_are_the_settings_defaults() -> None:
    settings = ElectionSettings(node_name="n")
    defaults = {param.name: param.default for param in main.params}
    assert defaults["leader_elect_namespace"] == settings.namespace
    assert duration(str(defaults["leader_elect_lease_duration"]), "") == settings.lease_duration
    assert duration(str(defaults["leader_elect_renew_deadline"]), "") == settings.renew_deadline
    assert duration(str(defaults["leader_elect_retry_period"]), "") == settings.retry_period


@pytest.mark.parametrize(
    ("duration", "deadline", "retry", "message"),
    [
        (10, 10.0, 2.0, "lease duration (10s) must be greater than the renew deadline (10s)"),
        (15, 2.0, 2.0, "renew deadline (2s) must be greater than the retry period (2s)"),
        (15, 10.0, 0.0, "which must be positive"),
    ],
)
def test_a_leader_must_stop_before_others_may_take_over(
    duration: int, deadline: float, retry: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ElectionSettings("n", lease_duration=duration, renew_deadline=deadline, retry_period=retry)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--leader-elect-lease-duration=2.5s"], "a Lease lasts whole seconds"),
        (["--leader-elect-renew-deadline=20s"], "must be greater than the renew deadline (20s)"),
        (["--leader-elect-retry-period=soon"], "is not a duration"),
    ],
)
def test_bad_election_flags_are_refused_before_anything_runs(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["--provider", "mock", "--leader-elect", *args])
    assert result.exit_code == 2
    assert message in " ".join(result.output.split())
