"""Instructions per call of the profile hot paths, counted by valgrind's callgrind: figures that
do not move with the machine's load, unlike the wall times of bench_feedback.py and
bench_profiles.py.

    python benches/callgrind_profiles.py            # every case
    python benches/callgrind_profiles.py apply      # or extract, replay

Each case runs this file under callgrind twice (``--child``: the set-up of the benchmark, then
0 or ``CALLS`` calls) and divides the difference of the two totals by the number of calls, so
the set-up cancels out. Cases:

- ``apply``: ``FeedbackProcessor.apply`` of one validated event to the warm profile of
  bench_feedback.py (the events are made in the set-up). The figure is a mean, so it carries
  the re-extraction of implicit preferences every ``refresh_every`` (50) events;
  ``apply-norefresh`` leaves that out (the median of the wall-time benchmark does too).
- ``extract``: ``PreferenceExtractor.extract`` over the 10,000 interactions of bench_profiles.py.
- ``replay``: ``FeedbackProcessor.apply`` of 100,000 events to a fresh profile, per event.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

CALLS = {"apply": 1_000, "apply-norefresh": 1_000, "extract": 20, "replay": 1}
PER_CALL = {"replay": 100_000}


def child(case: str, calls: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from penchant import FeedbackProcessor, InterestModel, PreferenceExtractor, UserProfile

    if case.startswith("apply"):
        from benches import bench_feedback as bench

        refresh = 0 if case == "apply-norefresh" else 50
        processor = FeedbackProcessor(model=InterestModel(refresh_every=refresh))
        profile = bench.warm_profile(processor)
        # Enough events for the largest count, made in both runs so that only applying differs.
        events = []
        for k in range(CALLS[case] + 20):
            kind, value = bench.KINDS[k % len(bench.KINDS)]
            item = bench.ITEMS[k % len(bench.ITEMS)]
            events.append(processor.feedback("u", item, kind, value, timestamp=bench.NOW + k * 1e-3))
        for feedback in events[:20]:  # warm the caches
            processor.apply(profile, [feedback])
        for feedback in events[20 : 20 + calls]:
            processor.apply(profile, [feedback])
    elif case == "extract":
        from benches import bench_profiles as bench

        profile = bench.profile_10k.__wrapped__()  # type: ignore[attr-defined]
        extractor = PreferenceExtractor()
        for _ in range(3 + calls):
            extractor.extract(profile, bench.NOW)
    elif case == "replay":
        from benches import bench_feedback as bench
        from penchant import Feedback

        log = [
            Feedback("u", f.item_id, f.feedback_type, f.value, {}, f.timestamp, f.event_id, f.features, f.attributes)
            for f in bench.replay_log.__wrapped__()  # type: ignore[attr-defined]
        ]
        processor = FeedbackProcessor()
        for _ in range(calls):
            processor.apply(UserProfile("u"), log)
    else:
        raise SystemExit(f"unknown case {case!r}")


def collected(case: str, calls: int) -> int:
    with tempfile.TemporaryDirectory() as directory:
        run = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                f"--callgrind-out-file={directory}/out",
                sys.executable,
                __file__,
                "--child",
                case,
                str(calls),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if found is None:
        raise RuntimeError(run.stderr[-2000:])
    return int(found.group(1))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]))
        return
    for case in sys.argv[1:] or list(CALLS):
        calls = CALLS[case]
        per_call = (collected(case, calls) - collected(case, 0)) / (calls * PER_CALL.get(case, 1))
        print(f"{case}: {per_call:,.0f} instructions per call", flush=True)


if __name__ == "__main__":
    main()
