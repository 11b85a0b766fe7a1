"""The kubelet's restartPolicy and crash-loop back-off rules (now in the SDK, shared with the cri
provider: `virtual_kubelet.sdk.restart_policy`)."""

from __future__ import annotations

from ...sdk.restart_policy import (
    BackOffSettings,
    Restart,
    RunEnd,
    Terminate,
    decide,
    should_restart,
)

__all__ = ["BackOffSettings", "Restart", "RunEnd", "Terminate", "decide", "should_restart"]
