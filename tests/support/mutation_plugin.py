"""A pytest plugin for mutation runs only (pyproject.toml's [tool.mutmut]).

mutmut 3 runs the tests many times in one process (once for its statistics,
then once per mutant in a fork), so Hypothesis sees one test method called
from several test-case instances and fails its differing-executors health
check.  Here that check is off, and examples are derandomized so that a
mutant's verdict does not depend on the run.
"""

from hypothesis import HealthCheck, settings

settings.register_profile(
    "mutation",
    suppress_health_check=[HealthCheck.differing_executors],
    derandomize=True,
    database=None,
)
settings.load_profile("mutation")
