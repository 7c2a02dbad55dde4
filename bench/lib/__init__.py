"""What the benchmark scripts in bench/ share.

    harness         logging, sizes, the run's context (cache drop, commands, helpers built
                    at run time), machine facts, the report files, signals, clean-up
    targets         where a workload runs: native, snapfs (mounted with Integration/lib's
                    Mount), bindfs, libfuse's passthrough_ll
    stats           the numbers in the tables: medians' formatting, ratios, spreads, percentiles
    passthrough_ll  building and mounting libfuse's passthrough_ll example
    request_counts  snapfs's request counters, per operation
    databases       the SQLite databases the SQLite benchmarks start from
    trees           removing what a benchmark made, sealed snapshots included
    replicas        replication's lag: a bucket's new objects timed as first listed; Litestream

Mounting snapfs, waiting for its daemon, /proc/self/mountinfo and loop file systems have one
home for the tests and the benchmarks: Integration/lib (see its __init__.py). Importing this
package puts the repository's root on sys.path, so that the scripts import it as
`Integration.lib`."""

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
