"""A test S3 endpoint: OpenStack Swift's account, container, object and proxy servers (with
the s3api middleware) served from one eventlet process. Started by test/helpers/s3.ts, which
writes the four config files into ETC first.

    /usr/bin/python3 swift-s3.py ETC

Debian 12's swift 2.30. One process, because each swift daemon spends seconds of CPU in
eventlet's monkey patching at start: four daemons take several times as long to come up on
two cores, and four times the memory.
"""
import os
import sys

from swift.common import utils

utils.eventlet_monkey_patch()

import eventlet  # noqa: E402  (after the monkey patching, as swift's own daemons do)
import eventlet.wsgi  # noqa: E402
from paste.deploy import appconfig  # noqa: E402
from swift.common.http_protocol import SwiftHttpProtocol  # noqa: E402
from swift.common.ring import RingBuilder  # noqa: E402
from swift.common.wsgi import loadapp  # noqa: E402
from swift.obj.server import global_conf_callback  # noqa: E402

BACKENDS = ("account", "container", "object")


def check_xattrs(devices):
    """The object server keeps its metadata in user xattrs; without them every PUT is a 507."""
    probe = os.path.join(devices, "d1", ".xattr-probe")
    open(probe, "w").close()
    try:
        os.setxattr(probe, "user.praxmail.probe", b"x" * 1024)
    except OSError as e:
        sys.exit(f"no user xattrs on the filesystem of {probe} ({e}): use a folder on ext4, xfs, btrfs or tmpfs")
    finally:
        os.unlink(probe)


def build_rings(etc, confs):
    """One device, one replica, 2^6 partitions per ring; the ring names each server's port."""
    for name in BACKENDS:
        if os.path.exists(f"{etc}/{name}.ring.gz"):
            continue
        builder = RingBuilder(6, 1, 1)
        builder.add_dev({"id": 0, "region": 1, "zone": 1, "ip": "127.0.0.1",
                         "port": int(confs[name]["bind_port"]), "device": "d1", "weight": 100, "meta": ""})
        builder.rebalance()
        builder.get_ring().save(f"{etc}/{name}.ring.gz")


def main(etc):
    confs = {name: appconfig(f"config:{etc}/{name}-server.conf", name=f"{name}-server")
             for name in (*BACKENDS, "proxy")}
    check_xattrs(confs["object"]["devices"])
    build_rings(etc, confs)
    utils.validate_configuration()
    servers = []
    for name, conf in confs.items():
        global_conf = {"log_name": f"{name}-server"}
        if name == "object":
            global_conf_callback(conf, global_conf)
        utils.get_logger(conf, f"{name}-server", log_to_console=True)
        app = loadapp(f"{etc}/{name}-server.conf", global_conf=global_conf)
        sock = eventlet.listen(("127.0.0.1", int(conf["bind_port"])), backlog=1024)
        servers.append(eventlet.spawn(eventlet.wsgi.server, sock, app, utils.NullLogger(),
                                      protocol=SwiftHttpProtocol, socket_timeout=60,
                                      capitalize_response_headers=False))
        print(f"{name}-server listening on 127.0.0.1:{conf['bind_port']}", file=sys.stderr, flush=True)
    for s in servers:
        s.wait()


if __name__ == "__main__":
    main(sys.argv[1])
