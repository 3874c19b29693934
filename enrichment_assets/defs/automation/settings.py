"""Sensor settings, from environment variables with defaults that work on a laptop.

The table of variables is in README.md ("Automation"). In short:
- `ENRICH_SENSORS_DEFAULT_STATUS` (`running`): or `stopped`, before anyone toggles them;
- `new_raw_files`: `ENRICH_NEW_FILES_INTERVAL_S` (30), `ENRICH_NEW_FILES_SETTLE_S` (10),
  `ENRICH_BATCH_MAX_FILES` (50), `ENRICH_BATCH_MAX_BYTES` (64 MiB),
  `ENRICH_NEW_FILES_MAX_BATCHES_PER_TICK` (20);
- `failed_partitions`: `ENRICH_RETRY_INTERVAL_S` (60), `ENRICH_RETRY_BACKOFF_S`
  (`60,300,900,3600,14400`: one wait per try), `ENRICH_RETRY_MAX_RUNS_PER_TICK` (200),
  `ENRICH_RETRY_MAX_REQUESTS_PER_TICK` (10);
- `ENRICH_SENSOR_RUN_EXECUTOR` (unset): `in_process` runs the requested runs' steps in one
  process (a batch's four steps are sequential, so this only saves process start-ups).
A bad value fails the code location's load with a one-line message naming the variable.
"""

from __future__ import annotations

from dataclasses import dataclass

from dagster import DefaultSensorStatus

from enrichment_assets import settings as env_settings


def default_sensor_status() -> DefaultSensorStatus:
    """`ENRICH_SENSORS_DEFAULT_STATUS`: sensors run out of the box unless set to `stopped`."""
    raw = env_settings.choice("ENRICH_SENSORS_DEFAULT_STATUS", "running", ("running", "stopped"))
    return DefaultSensorStatus.RUNNING if raw == "running" else DefaultSensorStatus.STOPPED


@dataclass(frozen=True)
class NewFilesSettings:
    """How `new_raw_files` decides a file is ready and groups files into batches."""

    settle_seconds: int = 10
    max_files_per_batch: int = 50
    max_bytes_per_batch: int = 64 * 1024 * 1024
    max_batches_per_tick: int = 20

    @classmethod
    def from_env(cls) -> NewFilesSettings:
        return cls(
            settle_seconds=env_settings.whole_number(
                "ENRICH_NEW_FILES_SETTLE_S", cls.settle_seconds, minimum=0
            ),
            max_files_per_batch=env_settings.whole_number(
                "ENRICH_BATCH_MAX_FILES", cls.max_files_per_batch, 1
            ),
            max_bytes_per_batch=env_settings.whole_number(
                "ENRICH_BATCH_MAX_BYTES", cls.max_bytes_per_batch, 1
            ),
            max_batches_per_tick=env_settings.whole_number(
                "ENRICH_NEW_FILES_MAX_BATCHES_PER_TICK", cls.max_batches_per_tick, 1
            ),
        )


# After the first run fails: wait 1 min before try 1, 5 min before try 2, ... 4 h before try 5.
DEFAULT_BACKOFF_SECONDS = (60, 300, 900, 3600, 14400)


@dataclass(frozen=True)
class RetrySettings:
    """How `failed_partitions` paces its retries; `len(backoff_seconds)` is the number of tries."""

    backoff_seconds: tuple[int, ...] = DEFAULT_BACKOFF_SECONDS
    max_runs_per_tick: int = 200
    max_requests_per_tick: int = 10
    # A partition registered this long ago with no run and no live command claiming it
    # is run by the sensor; this many partitions past the confirmed ones are looked at.
    never_ran_grace_s: int = 60
    never_ran_window: int = 1000

    @property
    def max_tries(self) -> int:
        return len(self.backoff_seconds)

    @classmethod
    def from_env(cls) -> RetrySettings:
        return cls(
            backoff_seconds=env_settings.seconds_list(
                "ENRICH_RETRY_BACKOFF_S", DEFAULT_BACKOFF_SECONDS
            ),
            max_runs_per_tick=env_settings.whole_number(
                "ENRICH_RETRY_MAX_RUNS_PER_TICK", cls.max_runs_per_tick, 1
            ),
            max_requests_per_tick=env_settings.whole_number(
                "ENRICH_RETRY_MAX_REQUESTS_PER_TICK", cls.max_requests_per_tick, 1
            ),
            never_ran_grace_s=env_settings.whole_number(
                "ENRICH_NEVER_RAN_GRACE_S", cls.never_ran_grace_s, 0
            ),
        )


def new_files_interval_seconds() -> int:
    return env_settings.whole_number("ENRICH_NEW_FILES_INTERVAL_S", 30, 1)


def retry_interval_seconds() -> int:
    return env_settings.whole_number("ENRICH_RETRY_INTERVAL_S", 60, 1)


def requested_run_config() -> dict:
    """Run config of the runs the sensors request (`ENRICH_SENSOR_RUN_EXECUTOR`)."""
    raw = env_settings.choice("ENRICH_SENSOR_RUN_EXECUTOR", "default", ("in_process", "default"))
    return {"execution": {"config": {"in_process": {}}}} if raw == "in_process" else {}
