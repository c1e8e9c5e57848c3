#!/usr/bin/env python3
"""A stand-in for ethtool 6.1 that the fake-tree tests give to tuning/ethtool.sh.

It keeps a NIC's channels, rings, coalescing, RSS table and features in a JSON file
(SPATE_FAKE_ETHTOOL_STATE), prints them in ethtool's text format, and changes them the way a
driver would, refusing what a real driver refuses. The state file is written with sorted keys,
so equal states are equal bytes and a test can compare the whole fake tree byte for byte. Each
command that changes something is appended to SPATE_FAKE_ETHTOOL_LOG, one line per call.

A NIC entry whose "rings", "coalesce" or "rss" is null behaves like a driver without that
feature: ethtool prints "netlink error: Operation not supported" and exits non-zero.
"""

import json
import os
import sys

NOT_SUPPORTED = "netlink error: Operation not supported"


def load():
    with open(os.environ["SPATE_FAKE_ETHTOOL_STATE"], encoding="utf-8") as f:
        return json.load(f)


def save(state):
    with open(os.environ["SPATE_FAKE_ETHTOOL_STATE"], "w", encoding="utf-8") as f:
        f.write(dumps(state))


def dumps(state):
    return json.dumps(state, sort_keys=True, indent=1) + "\n"


def log(argv):
    path = os.environ.get("SPATE_FAKE_ETHTOOL_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write("ethtool " + " ".join(argv) + "\n")


def fail(message, code=1):
    print(message, file=sys.stderr)
    sys.exit(code)


def show(value):
    return "n/a" if value is None else str(value)


def queue_count(nic):
    current = nic["channels"]["cur"]
    return current.get("combined") or current.get("rx") or 1


def print_channels(name, nic):
    print(f"Channel parameters for {name}:")
    for title, part in (("Pre-set maximums", "max"), ("Current hardware settings", "cur")):
        values = nic["channels"][part]
        print(f"{title}:")
        print(f"RX:\t\t{show(values.get('rx'))}")
        print(f"TX:\t\t{show(values.get('tx'))}")
        print(f"Other:\t\t{show(values.get('other'))}")
        print(f"Combined:\t{show(values.get('combined'))}")


def set_channels(nic, args):
    pairs = dict(zip(args[::2], (int(v) for v in args[1::2])))
    for key, value in pairs.items():
        maximum = nic["channels"]["max"].get(key)
        if maximum is None:
            fail(NOT_SUPPORTED)
        if value < 1 or value > maximum:
            fail("netlink error: requested channel count exceeds maximum")
    new_count = pairs.get("combined") or pairs.get("rx") or queue_count(nic)
    rss = nic.get("rss")
    if rss is not None:
        if not rss["default"] and max(rss["table"]) >= new_count:
            fail("netlink error: Invalid argument (RSS table uses removed queues)")
        if rss["default"]:
            rss["table"] = [i % new_count for i in range(len(rss["table"]))]
    nic["channels"]["cur"].update(pairs)


def print_rings(name, nic):
    print(f"Ring parameters for {name}:")
    for title, part in (("Pre-set maximums", "max"), ("Current hardware settings", "cur")):
        values = nic["rings"][part]
        print(f"{title}:")
        print(f"RX:\t\t{show(values.get('rx'))}")
        print("RX Mini:\tn/a")
        print("RX Jumbo:\tn/a")
        print(f"TX:\t\t{show(values.get('tx'))}")
    print("RX Buf Len:\t\tn/a")
    print("TX Push:\toff")


def set_rings(nic, args):
    pairs = dict(zip(args[::2], (int(v) for v in args[1::2])))
    for key, value in pairs.items():
        maximum = nic["rings"]["max"].get(key)
        if maximum is None or value < 1 or value > maximum:
            fail("netlink error: Invalid argument")
    nic["rings"]["cur"].update(pairs)


COALESCE_KEYS = ["stats-block-usecs", "sample-interval", "pkt-rate-low", "pkt-rate-high",
                 None, "rx-usecs", "rx-frames", "rx-usecs-irq", "rx-frames-irq",
                 None, "tx-usecs", "tx-frames", "tx-usecs-irq", "tx-frames-irq"]


def print_coalesce(name, nic):
    values = nic["coalesce"]
    print(f"Coalesce parameters for {name}:")
    print(f"Adaptive RX: {show(values.get('adaptive-rx'))}  "
          f"TX: {show(values.get('adaptive-tx'))}")
    for key in COALESCE_KEYS:
        print("" if key is None else f"{key}: {show(values.get(key))}")


def set_coalesce(nic, args):
    for key, value in zip(args[::2], args[1::2]):
        if key not in nic["coalesce"]:
            fail(NOT_SUPPORTED)
        nic["coalesce"][key] = value if key.startswith("adaptive") else int(value)


def print_rss(name, nic):
    table = nic["rss"]["table"]
    print(f"RX flow hash indirection table for {name} with {queue_count(nic)} RX ring(s):")
    for start in range(0, len(table), 8):
        row = "".join(f"{q:6d}" for q in table[start:start + 8])
        print(f"{start:5d}: {row}")
    print("RSS hash key:")
    print("00:11:22:33")
    print("RSS hash function:")
    print("    toeplitz: on")


def set_rss(nic, args):
    rss = nic["rss"]
    size = len(rss["table"])
    count = queue_count(nic)
    if args == ["default"]:
        rss["table"] = [i % count for i in range(size)]
        rss["default"] = True
    elif args[0] == "equal" and len(args) == 2:
        queues = int(args[1])
        if queues < 1 or queues > count:
            fail("netlink error: Invalid argument")
        rss["table"] = [i % queues for i in range(size)]
        rss["default"] = False
    elif args[0] == "weight":
        weights = [int(w) for w in args[1:]]
        if len(weights) > count or sum(weights) == 0:
            fail("netlink error: Invalid argument")
        # ethtool's own spread: entry j goes to the first queue whose cumulative weight
        # covers it, so each queue gets a contiguous block.
        total = sum(weights)
        table, queue, partial = [], 0, weights[0]
        for j in range(size):
            while j * total >= partial * size:
                queue += 1
                partial += weights[queue]
            table.append(queue)
        rss["table"] = table
        rss["default"] = False
    else:
        fail("ethtool: bad command line argument(s)")


def print_features(name, nic):
    print(f"Features for {name}:")
    for key, value in nic["features"].items():
        print(f"{key}: {value}")


def main():
    argv = sys.argv[1:]
    if len(argv) < 2:
        fail("ethtool: bad command line argument(s)")
    option, name, rest = argv[0], argv[1], argv[2:]
    state = load()
    nic = state.get(name)
    if nic is None:
        fail(f"netlink error: no device matches name ({name})")
    readers = {"-l": ("channels", print_channels), "-g": ("rings", print_rings),
               "-c": ("coalesce", print_coalesce), "-x": ("rss", print_rss),
               "-k": ("features", print_features)}
    writers = {"-L": ("channels", set_channels), "-G": ("rings", set_rings),
               "-C": ("coalesce", set_coalesce), "-X": ("rss", set_rss)}
    if option == "-i":
        print(f"driver: {nic['driver']}\nversion: 1.0\nbus-info: 0000:00:00.0")
    elif option in readers:
        feature, reader = readers[option]
        if nic.get(feature) is None:
            fail(NOT_SUPPORTED)
        reader(name, nic)
    elif option in writers:
        feature, writer = writers[option]
        if nic.get(feature) is None:
            fail(NOT_SUPPORTED)
        log(argv)
        writer(nic, rest)
        save(state)
    else:
        fail("ethtool: bad command line argument(s)")


if __name__ == "__main__":
    main()
