"""Early-exit voting: stop running a track's sub-tracks once the soft vote is decided.

Most tracks are decided long before the last of their sub-tracks: when the first
few, spread over the track, agree by a wide margin, the others almost never
change the winner. A rule says after how many sub-tracks to look (`checkpoints`)
and how wide the margin between the soft vote's top two genres must be to stop
there. It is stated relative to the vote (a probability margin), not to one
model's scores, so it carries over to another calibrated model; it is refitted by
``bench/early_exit.py``, which also checks it against the full vote.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EarlyExit:
    """When to stop running a track's sub-tracks.

    After `checkpoints[i]` sub-tracks have run (chosen evenly spread over the track,
    see `order`), stop if the soft vote's top probability leads the second by at
    least `margin`; otherwise run up to the next checkpoint, and at the end all of
    them. A track with no more sub-tracks than the first checkpoint runs them all.
    """

    checkpoints: tuple[int, ...]
    margin: float

    def order(self, n: int) -> list[int]:
        """Indices 0..n-1 in the order to run them: the first checkpoint's are spread
        evenly over the track (3 of 10: 1, 5, 8), each later one fills the widest gaps."""
        chosen: list[int] = []
        for k in (*self.checkpoints, n):
            k = min(k, n)
            if k <= len(chosen):
                continue
            # add the sub-tracks farthest from those already chosen, ties to the earlier one
            while len(chosen) < k:
                if not chosen:
                    spread = [int(np.floor((i + 0.5) * n / k)) for i in range(k)]
                    chosen.extend(dict.fromkeys(spread))
                    continue
                rest = [i for i in range(n) if i not in chosen]
                chosen.append(max(rest, key=lambda i: (min(abs(i - c) for c in chosen), -i)))
        return chosen

    def next_stop(self, done: int, n: int) -> int:
        """How many sub-tracks should have run before the next look (n: all of them)."""
        return next((k for k in self.checkpoints if done < k < n), n)

    def decided(self, probs: np.ndarray) -> bool:
        """Whether the soft vote of these (sub-tracks, labels) probabilities is decisive."""
        mean = np.asarray(probs, dtype=np.float64).mean(axis=0)
        if mean.size < 2:
            return True
        top2 = np.partition(mean, -2)[-2:]
        return bool(top2[1] - top2[0] >= self.margin)

    def run_count(self, probs: np.ndarray) -> int:
        """Sub-tracks the rule runs for a track whose sub-track probabilities (in `order`)
        are `probs` (n, labels): what the pipeline does, computed after the fact."""
        n = len(probs)
        done = 0
        while True:
            done = self.next_stop(done, n)
            if done >= n or self.decided(probs[:done]):
                return done


def applied(rule: EarlyExit | None, vote: str, segments: int | None) -> EarlyExit | None:
    """`rule` where early exit applies, None where every sub-track runs: it stops only the soft vote,
    and only with the card's own sub-track count (``--segments`` asks for all of them)."""
    return rule if vote == "soft" and segments is None else None


#: The default rule for the soft vote (`genretag classify` without ``--segments``): look after
#: 3 sub-tracks, stop at a 0.5 margin. Checked with ``bench/early_exit.py`` on both bundled musicnn
#: models, it gives the full 10-sub-track vote's genre on every GTZAN valid and test track and every
#: Emotify valid and test recording. The script's fit (on GTZAN valid + Emotify valid, with held-out
#: twins of both models whose GTZAN head never saw valid: ``scripts/heldout_models.py``) proposes
#: looks after 3, 5 and 7 sub-tracks at a 0.26 margin: 4.40 sub-tracks per GTZAN test track with
#: `broad-musicnn` instead of 5.82, but one test track of each model then gets another genre than the
#: full vote (a right answer lost each time), and on Emotify test the uncalibrated GTZAN models write
#: more wrong genres; so this rule stays until a fit keeps the answers. docs/performance.md
#: ("Early-exit voting") has the tables and commands; rerun them when a bundled model changes.
DEFAULT_EARLY_EXIT = EarlyExit(checkpoints=(3,), margin=0.5)
