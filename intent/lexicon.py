"""General networking vocabulary the tagger uses as word-class features.

These are generic lists (protocol names, units, middlebox kinds, policy verbs, well-known
services), not phrases from any labelled data set: they let the tagger recognise a word it never
saw in training ("rtsp", "install") by its class.
"""

from __future__ import annotations

WORD_CLASSES: dict[str, frozenset[str]] = {
    "protocol": frozenset(
        "tcp udp icmp ip ipv4 ipv6 http https ftp sftp ftps ssh sip rtsp rtp dns dhcp smtp imap pop3 snmp bgp ospf "
        "telnet quic ntp mqtt rdp vpn gre".split()
    ),
    "middlebox": frozenset(
        "firewall firewalls dpi nat ids ips proxy cache monitor monitoring shaper shaping balancer balancing scanner "
        "filter inspection inspector accelerator optimizer waf translation detection prevention parental".split()
    ),
    "unit": frozenset(
        "bps kbps mbps gbps tbps kb mb gb tb kbit mbit gbit bytes kilobytes megabytes gigabytes terabytes bits "
        "kilobits megabits gigabits".split()
    ),
    "period": frozenset("second seconds sec s minute minutes hour hours day days daily week weeks weekly wk month months monthly mo year".split()),
    "clock": frozenset("am pm midnight noon morning evening night".split()),
    "verb_allow": frozenset("allow allowed allows permit permitted grant granted let unblock enable accept accepted".split()),
    "verb_block": frozenset("block blocked blocks deny denied prevent prohibit forbid drop reject disable restrict".split()),
    "verb_add": frozenset("add install include setup set put deploy insert place define provide create configure".split()),
    "verb_remove": frozenset("remove uninstall dismiss delete disable unset clear revoke".split()),
    "verb_qos": frozenset("limit limited throttle throttled cap capped reduce increase prioritize guarantee restrict download upload".split()),
    "qos_metric": frozenset("bandwidth quota rate latency jitter throughput usage speed limit limits quotas data consumption".split()),
    "service": frozenset(
        "youtube netflix facebook skype email e-mail spotify twitter instagram whatsapp bittorrent torrent steam "
        "zoom teams hulu twitch tiktok dropbox google gmail".split()
    ),
    "traffic_kind": frozenset("traffic streaming video gaming games voip music social media torrent p2p web browsing".split()),
    "negation": frozenset("not no cannot never nor without".split()),
    "time_prep": frozenset("from to until till between and during starting start finish interval at".split()),
}


def word_classes(word: str) -> list[str]:
    """The classes ``word`` (lower-case) belongs to."""
    return [name for name, words in WORD_CLASSES.items() if word in words]
