"""Private RabbitMQ and PostgreSQL instances for fault tests, which stop, kill and restart them.

The machine's RabbitMQ (127.0.0.1:5672) and PostgreSQL (127.0.0.1:5432) serve every other test;
restarting them mid-run would break those. A fault test starts its own from the same Debian
installation, on other ports, with every file below a state directory it owns, and removes it at
the end (:func:`private_rabbitmq`, :func:`private_postgres`, defined here). The instances
themselves are :class:`PrivateRabbitMQ` (``private_rabbitmq.py``) and :class:`PrivatePostgres`
(``private_postgres.py``); port reservations, commands run as the service's OS user and
:class:`PrivateServiceError`, which both use, are in ``private_common.py``. Their state
directories::

    <rabbitmq state_dir>/           owned by the ``rabbitmq`` OS user
    ├── rabbitmq.conf               listeners.tcp.local = 127.0.0.1:<port>, stats every 0.5 s
    ├── advanced.config             quorum_tick_interval 0.5 s (quorum queue counts)
    ├── rabbitmq-env.conf           empty, so /etc/rabbitmq/rabbitmq-env.conf is not read
    ├── enabled_plugins             empty: no management plugin
    ├── mnesia/<node>/              schema, message stores, quorum queue logs (survive restarts)
    ├── log/<node>.log              the node's log; erl_crash.dump when boot fails
    ├── rabbitmq.pid                the beam.smp pid, written by the node
    └── commands.log                output of rabbitmq-server -detached, rabbitmqctl shutdown, …

    <postgres state_dir>/           owned by the ``postgres`` OS user
    ├── data/                       initdb's cluster (trust auth; port, listen_addresses and the
    │                               socket directory appended to postgresql.conf)
    ├── run/                        the unix socket
    ├── postgresql.log              the server's log
    └── commands.log                output of initdb and pg_ctl

How it works here (RabbitMQ 3.10.8 on Erlang/OTP 25, PostgreSQL 15, Debian, tests run as root):

- Both daemons refuse root or expect their own user, so commands run through ``runuser -u
  rabbitmq|postgres --``. runuser keeps the environment and sets ``HOME``; for RabbitMQ that is
  ``/var/lib/rabbitmq``, so the private node and ``rabbitmqctl -n <node>`` read the same
  ``.erlang.cookie`` as the shared node: no cookie handling is needed. The scripts are run from
  ``/usr/lib/rabbitmq/bin`` rather than through ``/usr/sbin``'s wrapper, which ``su``-s the same
  way but, run as ``rabbitmq``, overwrites the shared node's ``/var/log/rabbitmq/startup_log``.
- A state directory must be reachable by that user: pytest's ``tmp_path`` (below the 0700
  ``/tmp/pytest-of-root``) is not, and is refused with an error; the default is a fresh
  directory in the system temp directory.
- Node names are ``sluice-faults-<port>@localhost``: the shared node is ``rabbit@localhost`` (set
  by ``/etc/rabbitmq/rabbitmq-env.conf``). ``<name>@<short hostname>`` works too (it resolves to
  127.0.0.1 here), but ``localhost`` matches the shared node and needs no lookup. epmd is shared.
- ``RABBITMQ_CONFIG_FILE`` must name our own file: ``/etc/rabbitmq/rabbitmq.conf`` sets
  ``listeners.tcp.local = 127.0.0.1:5672``, with which the node dies at boot (eaddrinuse).
- ``list_queues`` shows the counts each queue last published, every ``quorum_tick_interval``
  (quorum queues) or ``collect_statistics_interval`` (classic): 5 s by default, which made a
  consumer that had just subscribed show as 0 for up to 5 s. Both are 0.5 s here; poll anyway.
- Ports: the first free from 5673 (AMQP; Erlang distribution from 25673) and 5433, each held by
  an flock on ``<tmp>/sluice-private-ports/<port>.lock`` for the owning object's life, so that
  concurrent sessions never pick the same port, and a stopped service keeps its port.
- A quorum queue declared less than about a second before a SIGKILL of the node came back
  without a leader (``leader not known`` in the log; Basic.Get waits forever) and, once an
  election was forced with ``ra:trigger_election``, empty: its confirmed messages were lost.
  Declared a second or more before, every confirmed message survived, however soon after the
  publish the kill came. A graceful :meth:`PrivateRabbitMQ.restart` has no such window. Crash
  tests should let the topology settle before they kill.
- Measured on a 2-core machine: RabbitMQ start ≈ 6 to 8.5 s (first start, after a stop or a
  SIGKILL alike), ``rabbitmqctl shutdown`` ≈ 4 s, so restart ≈ 10.5 to 13 s; SIGKILL ≈ 0.2 s;
  stop_app ≈ 0.65 s, start_app ≈ 1.4 s; each ``rabbitmqctl`` call ≈ 0.5 to 0.8 s. PostgreSQL
  initdb + start ≈ 1.4 s, start ≈ 0.25 s, fast stop ≈ 0.15 s, restart ≈ 0.4 s (fast) or
  ≈ 0.55 s (immediate, with crash recovery).

Every method blocks; from async code call them through ``asyncio.to_thread`` so that the event
loop, and any robust connection on it, keeps running through the outage. Failures raise
:class:`PrivateServiceError` quoting the command's output or the service's log: a fault test
fails, never skips, when it cannot have its services.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import structlog

from tests.faults.private_common import PrivateServiceError
from tests.faults.private_postgres import PrivatePostgres, StopMode
from tests.faults.private_rabbitmq import PrivateRabbitMQ

__all__ = [
    "PrivatePostgres",
    "PrivateRabbitMQ",
    "PrivateServiceError",
    "StopMode",
    "private_postgres",
    "private_rabbitmq",
]

log = structlog.get_logger(__name__)


@contextlib.contextmanager
def private_rabbitmq(
    state_dir: Path | None = None, *, port: int | None = None, timeout_s: float = 60.0
) -> Iterator[PrivateRabbitMQ]:
    """A started :class:`PrivateRabbitMQ`; at exit it is stopped and ``state_dir`` removed.

    ``state_dir`` defaults to a fresh directory in the system temp directory; one given is
    removed at exit too, so it must be disposable (and reachable by the ``rabbitmq`` user).

    Raises:
        PrivateServiceError: it cannot be started (at entry) or stopped (at exit).
    """
    path = Path(state_dir or tempfile.mkdtemp(prefix="sluice-rabbitmq-"))
    try:
        broker = PrivateRabbitMQ(path, port=port)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    with _teardown(broker.stop, broker.close, path):
        broker.start(timeout_s)
        yield broker


@contextlib.contextmanager
def private_postgres(
    state_dir: Path | None = None, *, port: int | None = None, timeout_s: float = 60.0
) -> Iterator[PrivatePostgres]:
    """A started :class:`PrivatePostgres`; at exit it is stopped (fast) and ``state_dir``
    removed. ``state_dir`` as for :func:`private_rabbitmq` (reachable by ``postgres``).

    Raises:
        PrivateServiceError: it cannot be started (at entry) or stopped (at exit).
    """
    path = Path(state_dir or tempfile.mkdtemp(prefix="sluice-postgres-"))
    try:
        cluster = PrivatePostgres(path, port=port)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    with _teardown(cluster.stop, cluster.close, path):
        cluster.start(timeout_s)
        yield cluster


@contextlib.contextmanager
def _teardown(
    stop: Callable[[], object], close: Callable[[], object], path: Path
) -> Iterator[None]:
    """Stop, release and remove at exit; a stop failure is raised unless another error is
    already on its way out (which it would hide)."""
    failing = False
    try:
        yield
    except BaseException:
        failing = True
        raise
    finally:
        try:
            stop()
        except PrivateServiceError:
            if not failing:
                raise
            log.exception("private_service.stop_failed", state_dir=str(path))
        finally:
            close()
            shutil.rmtree(path, ignore_errors=True)
