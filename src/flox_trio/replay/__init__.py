"""Replays and bundles, above the runner: a tape run again, swaps included, and checked against what it gave before.

    result = flox.replay.replay_tape("runs/today.tape", mode="reproduce")  # what the session did, order for order
    result = flox.replay.replay_tape("runs/today.tape")                    # what its strategies would do on paper
    flox.replay.pack_bundle("runs/today.tape", "today.tar")
    flox.replay.validate_bundle("today.tar", trust=True).ok   # its Python strategies will run
"""

from ._bundle import BundleLimits as BundleLimits
from ._bundle import UntrustedBundleError as UntrustedBundleError
from ._bundle import Validation as Validation
from ._bundle import is_bundle as is_bundle
from ._bundle import open_bundle as open_bundle
from ._bundle import pack_bundle as pack_bundle
from ._bundle import tape_of as tape_of
from ._bundle import validate_bundle as validate_bundle
from ._recorded import RecordedExecutor as RecordedExecutor
from ._recorded import RecordedSettings as RecordedSettings
from ._recorded import RecordedStatus as RecordedStatus
from ._replay import RecordedStrategy as RecordedStrategy
from ._replay import ReplayMode as ReplayMode
from ._replay import ReplayPlan as ReplayPlan
from ._replay import ReplayResult as ReplayResult
from ._replay import plan_from_tape as plan_from_tape
from ._replay import replay_tape as replay_tape

__all__ = ["BundleLimits", "RecordedExecutor", "RecordedSettings", "RecordedStatus", "RecordedStrategy",
           "ReplayMode", "ReplayPlan", "ReplayResult", "UntrustedBundleError", "Validation",
           "is_bundle", "open_bundle", "pack_bundle", "plan_from_tape", "replay_tape", "tape_of", "validate_bundle"]
