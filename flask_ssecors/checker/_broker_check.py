"""``flask ssecors check-broker``: what the app's Redis looks like, and what could lose events.

:func:`check_broker` connects with a broker URL (one server, Sentinel or Cluster) and reports
the topology (primaries, their replicas, the slots each primary serves), each node's round-trip
time and version, and the settings that decide whether events survive: persistence (RDB, AOF),
``maxmemory`` and ``maxmemory-policy`` (any policy but ``noeviction`` may evict a channel's
stream, so clients would get the reset event), and whether enough replicas are connected for
``SSECORS_BROKER_MIN_REPLICAS``. With a channel name, it also says which keys and node serve it.
"""

from __future__ import annotations

import time
import typing as t

from .._urls import parse_url
from .._urls import redact
from ..brokers._redis_layout import Keys
from ..brokers._redis_layout import shard_of

Report = dict[str, t.Any]


def check_broker(
    url: str,
    *,
    channel: str | None = None,
    min_replicas: int = 0,
    prefix: str = "ssecors:",
    timeout: float = 2.0,
) -> Report:
    """Inspect the Redis a broker URL names; return a JSON-able report.

    :param url: the app's ``SSECORS_BROKER_URL``.
    :param channel: a channel to locate (its keys, slot and node).
    :param min_replicas: the app's ``SSECORS_BROKER_MIN_REPLICAS``, to check against.
    :param prefix: the broker's key prefix.
    :param timeout: bound on each command, in seconds.
    """
    import redis
    from redis.cluster import RedisCluster
    from redis.sentinel import Sentinel

    address = parse_url(url)
    report: Report = {"url": redact(url), "kind": address.kind, "nodes": [], "problems": []}
    options: dict[str, t.Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "username": address.username,
        "password": address.password,
    }
    if address.tls:
        options["ssl"] = True
    # Every node visited (the primary, its replicas, the Sentinels' primary and replicas,
    # every cluster node) is asked with the configured credentials.
    clients: list[tuple[str, t.Any]] = []
    try:
        if address.kind == "single":
            client = redis.Redis.from_url(url, socket_timeout=timeout)
            connection = client.connection_pool.connection_kwargs
            name = (
                connection.get("path")
                or f"{connection.get('host', 'localhost')}:{connection.get('port', 6379)}"
            )
            clients.append((str(name), client))
            replication = client.info("replication")
            for key, value in replication.items():
                if key.startswith("slave") and isinstance(value, dict):
                    clients.append(
                        (f"{value['ip']}:{value['port']}", _node(value, options, timeout))
                    )
        elif address.kind == "sentinel":
            sentinel = Sentinel(list(address.hosts), sentinel_kwargs={"socket_timeout": timeout})
            service = t.cast(str, address.service)
            report["sentinels"] = []
            for host, port in address.hosts:
                entry: dict[str, t.Any] = {"address": f"{host}:{port}"}
                try:
                    found = redis.Redis(host=host, port=port, socket_timeout=timeout)
                    primary = found.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", service)
                    entry["primary"] = (
                        f"{_text(primary[0])}:{_text(primary[1])}" if primary else None
                    )
                except (redis.RedisError, OSError) as error:
                    entry["error"] = str(error)
                    report["problems"].append(f"sentinel {host}:{port}: {error}")
                report["sentinels"].append(entry)
            primary_host, primary_port = sentinel.discover_master(service)
            clients.append(
                (
                    f"{primary_host}:{primary_port}",
                    redis.Redis(host=primary_host, port=primary_port, db=address.db, **options),
                )
            )
            for replica_host, replica_port in sentinel.discover_slaves(service):
                clients.append(
                    (
                        f"{replica_host}:{replica_port}",
                        redis.Redis(host=replica_host, port=replica_port, **options),
                    )
                )
        else:
            host, port = address.hosts[0]
            cluster: t.Any = RedisCluster(host=host, port=port, **options)
            for node in cluster.get_nodes():
                clients.append((node.name, node.redis_connection))
            report["slots"] = _slots(cluster)
    except (redis.RedisError, OSError) as error:
        report["problems"].append(f"cannot reach Redis: {error}")
        report["ok"] = False
        return report
    for name, client in clients:
        report["nodes"].append(_inspect(name, client, report["problems"]))
    _judge(report, min_replicas)
    if channel is not None:
        report["channel"] = _locate(channel, prefix, address.kind, report)
    report["ok"] = not report["problems"]
    return report


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _node(value: dict[str, t.Any], options: dict[str, t.Any], timeout: float) -> t.Any:
    import redis

    return redis.Redis(host=value["ip"], port=int(value["port"]), **options)


def _inspect(name: str, client: t.Any, problems: list[str]) -> dict[str, t.Any]:
    import redis

    node: dict[str, t.Any] = {"address": name}
    try:
        started = time.perf_counter()
        client.ping()
        node["rtt_ms"] = round((time.perf_counter() - started) * 1000, 3)
        info = client.info()
        node["version"] = info.get("redis_version")
        node["role"] = "primary" if info.get("role") == "master" else "replica"
        node["connected_replicas"] = int(info.get("connected_slaves", 0))
        node["aof"] = bool(info.get("aof_enabled"))
        node["rdb_changes_since_save"] = info.get("rdb_changes_since_last_save")
        config = client.config_get("maxmemory*")
        config.update(client.config_get("save"))
        node["maxmemory"] = int(config.get("maxmemory", 0))
        node["maxmemory_policy"] = config.get("maxmemory-policy")
        node["save"] = config.get("save", "")
    except (redis.RedisError, OSError) as error:
        node["error"] = str(error)
        problems.append(f"{name}: {error}")
    return node


def _judge(report: Report, min_replicas: int) -> None:
    """The settings that can lose events."""
    problems: list[str] = report["problems"]
    for node in report["nodes"]:
        if "error" in node:
            continue
        name = node["address"]
        if _major(node.get("version")) < 7:
            problems.append(
                f"{name}: Redis {node.get('version')}: flask-ssecors needs Redis 7.0 or later "
                "(its listeners use sharded pub/sub, SSUBSCRIBE); streams would get no events."
            )
        policy = node.get("maxmemory_policy")
        if node.get("maxmemory") and policy != "noeviction":
            problems.append(
                f"{name}: maxmemory-policy {policy} may evict channels' streams and their "
                "generations (clients then get the reset event); use noeviction, and size "
                "maxmemory for channels x SSECORS_BACKLOG x the event size."
            )
        if node.get("role") == "primary":
            if not node.get("aof") and not node.get("save"):
                problems.append(
                    f"{name}: no persistence (RDB and AOF off): a restart loses every channel, "
                    "and every client gets the reset event (replicas survive a failover)."
                )
            if node.get("connected_replicas", 0) < min_replicas:
                problems.append(
                    f"{name}: {node.get('connected_replicas', 0)} replicas connected, fewer than "
                    f"SSECORS_BROKER_MIN_REPLICAS = {min_replicas}: every publish would fail."
                )


def _major(version: object) -> int:
    """The major version of ``"7.0.15"``; 0 when unknown."""
    head = str(version or "").partition(".")[0]
    return int(head) if head.isdigit() else 0


def _slots(cluster: t.Any) -> list[dict[str, t.Any]]:
    ranges = []
    for (start, end), nodes in sorted(cluster.cluster_slots().items()):
        primary = nodes.get("primary") or (None, None)
        ranges.append(
            {
                "slots": [start, end],
                "primary": f"{primary[0]}:{primary[1]}",
                "replicas": [f"{host}:{port}" for host, port in nodes.get("replicas", [])],
            }
        )
    return ranges


def _locate(channel: str, prefix: str, kind: str, report: Report) -> dict[str, t.Any]:
    from redis.crc import key_slot

    keys = Keys(prefix)
    key = keys.channel(channel)
    found: dict[str, t.Any] = {
        "name": channel,
        "shard": shard_of(channel),
        "keys": keys.publish_keys(channel),
        "slot": key_slot(key.encode()),
    }
    if kind == "cluster":
        for entry in report.get("slots", []):
            start, end = entry["slots"]
            if start <= found["slot"] <= end:
                found["node"] = entry["primary"]
    else:
        primaries = [n["address"] for n in report["nodes"] if n.get("role") == "primary"]
        found["node"] = primaries[0] if primaries else None
    return found


def to_text(report: Report) -> str:
    """The report for a terminal."""
    lines = [f"broker   {report['url']} ({report['kind']})"]
    for entry in report.get("sentinels", []):
        said = entry.get("primary") or entry.get("error")
        lines.append(f"sentinel {entry['address']}: primary {said}")
    for entry in report.get("slots", []):
        start, end = entry["slots"]
        replicas = ", ".join(entry["replicas"]) or "none"
        lines.append(f"slots    {start}-{end}: {entry['primary']} (replicas: {replicas})")
    for node in report["nodes"]:
        if "error" in node:
            lines.append(f"node     {node['address']}: unreachable ({node['error']})")
            continue
        persistence = ", ".join(
            part
            for part in (
                "AOF" if node["aof"] else "",
                f"RDB {node['save']}" if node["save"] else "",
            )
            if part
        )
        lines.append(
            f"node     {node['address']} {node['role']}, Redis {node['version']}, "
            f"{node['rtt_ms']} ms, replicas {node['connected_replicas']}, "
            f"persistence {persistence or 'off'}, maxmemory {node['maxmemory']} "
            f"({node['maxmemory_policy']})"
        )
    if "channel" in report:
        found = report["channel"]
        lines.append(
            f"channel  {found['name']!r}: shard {found['shard']}, slot {found['slot']}, "
            f"node {found.get('node')}, keys {', '.join(found['keys'])}, "
            f"pub/sub channel {found['keys'][0]} (sharded)"
        )
    for problem in report["problems"]:
        lines.append(f"warning  {problem}")
    if not report["problems"]:
        lines.append("ok       nothing here loses events on its own")
    return "\n".join(lines)
