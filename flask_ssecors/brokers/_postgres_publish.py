"""Publishing to PostgreSQL: the broker's own connections, and the application's transaction.

Every publish is one call of ``<schema>.publish(...)`` (see :mod:`._postgres_sql`). With
``transaction=``, the call runs on the application's connection, inside its transaction: the
event is kept and delivered if and only if that transaction commits (NOTIFY is sent at
commit), in commit order per channel, and the id returned is the one it will have. Accepted:

- a psycopg 3 connection (:class:`psycopg.Connection`), or any DB-API connection whose
  driver takes ``%(name)s`` parameters (psycopg2);
- an SQLAlchemy :class:`~sqlalchemy.engine.Connection`;
- an SQLAlchemy :class:`~sqlalchemy.orm.Session`, or a
  :class:`~sqlalchemy.orm.scoped_session` such as Flask-SQLAlchemy's ``db.session`` (its
  current session): the event joins the session's transaction on its connection.

While the transaction is open it holds the channel's row lock: other publishes to that channel
wait for it to end (that is what keeps numbers gapless and in commit order), so keep such
transactions short.
"""

from __future__ import annotations

import sys
import typing as t

from .._wire import encode_without_id
from ..exceptions import BrokerUnavailable
from ..exceptions import UsageError
from ._base import check_channel
from ._base import check_event_size
from ._base import new_generation
from ._postgres_sql import SLACK
from ._postgres_sql import Statements

if t.TYPE_CHECKING:
    from ..events import Event


class PublishParams(t.TypedDict):
    name: str
    generation: str
    kind: str | None
    data: bytes
    keep: int


class TransactionError(UsageError):
    """``transaction=`` is not something the PostgreSQL broker can publish in.

    .. versionadded:: 0.1
    """


class PostgresPublishing:
    """What the broker and :class:`~flask_ssecors.Publisher` share: checking and encoding an
    event, and running the publish on a connection or in a transaction."""

    def __init__(self, *, schema: str, backlog: int, max_event_size: int | None) -> None:
        self.statements = Statements(schema)
        self.backlog = backlog
        self.max_event_size = max_event_size

    def params(self, channel: str, event: Event) -> PublishParams:
        """Check and encode ``event`` for ``channel``.

        :raises ChannelError: for a channel name no broker can store.
        :raises EventFieldError: for an event above ``max_event_size``.
        """
        check_channel(channel)
        encoded = encode_without_id(event)
        check_event_size(encoded, self.max_event_size)
        return {
            "name": channel,
            "generation": new_generation(),
            "kind": event.event,
            "data": encoded,
            "keep": self.backlog + SLACK,
        }

    def in_transaction(self, transaction: object, params: PublishParams) -> str:
        """Publish inside ``transaction`` (see the module); return the id.

        :raises TransactionError: for an object that is none of the accepted kinds.
        :raises BrokerUnavailable: when the statement fails (the message says why; the
            application's transaction is then aborted, as for any failed statement in it).
        """
        try:
            return self._in_transaction(transaction, params)
        except TransactionError:
            raise
        except Exception as error:
            if _is_driver_error(error):
                raise BrokerUnavailable(
                    f"publish in the transaction failed: {' '.join(str(error).split())[:300]}"
                ) from error
            raise

    def _in_transaction(self, transaction: object, params: PublishParams) -> str:
        orm = sys.modules.get("sqlalchemy.orm")
        engine = sys.modules.get("sqlalchemy.engine")
        if orm is not None and isinstance(transaction, orm.scoped_session):
            # Flask-SQLAlchemy's ``db.session``: the session of the current scope.
            transaction = transaction()
        if (orm is not None and isinstance(transaction, orm.Session)) or (
            engine is not None and isinstance(transaction, engine.Connection)
        ):
            import sqlalchemy

            result = transaction.execute(
                sqlalchemy.text(self.statements.publish_named), dict(params)
            )
            return str(result.scalar_one())
        if engine is not None and isinstance(transaction, sqlalchemy_engine_types()):
            raise TransactionError(
                "transaction= takes a connection or a session, not an Engine: publish in "
                "'with engine.begin() as connection:' and pass the connection"
            )
        cursor_factory = getattr(transaction, "cursor", None)
        if not callable(cursor_factory):
            raise TransactionError(
                f"transaction= must be a psycopg connection, an SQLAlchemy Connection or "
                f"Session; got {type(transaction).__name__}"
            )
        cursor = cursor_factory()
        try:
            cursor.execute(self.statements.publish, dict(params))
            row = cursor.fetchone()
        finally:
            cursor.close()
        return str(row[0])


def sqlalchemy_engine_types() -> tuple[type, ...]:
    engine = sys.modules.get("sqlalchemy.engine")
    return (engine.Engine,) if engine is not None else ()


def _is_driver_error(error: Exception) -> bool:
    """Whether ``error`` comes from a database driver or SQLAlchemy (not a bug of ours)."""
    for klass in type(error).__mro__:
        module = klass.__module__.partition(".")[0]
        if module in {"psycopg", "psycopg2", "sqlalchemy"}:
            return True
    return False
