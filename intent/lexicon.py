"""General networking vocabulary the tagger uses as word-class features.

These are generic lists (protocol names, units, middlebox kinds, policy verbs, well-known
services), not phrases from any labelled data set: they let the tagger recognise a word it never
saw in training ("rtsp", "install") by its class.

The classes ``group``, ``place``, ``weekday``, ``bound`` and ``shape_word`` and the longer
service/protocol/middlebox lists were added for operator text the labelled file never shows
(issue 14): campus populations ("students", "guests", "visitors"), places and network parts
("dorms", "labs", "library", "gateway"), days and periods. ``auxiliary``, ``clause_open`` and
``determiner`` describe clause structure, so the span taggers can tell a clause's subject ("students"
in "to ensure students from the labs are not ...") from the object of a preposition ("to students").
:data:`SUBSTITUTES` names the classes whose words :mod:`intent.augment` may swap for one another
inside a labelled span.

A class should mean what it says: a word is left out of a class it seldom has in operators' text
("limit" is a constraint, not a ``qos_metric``; "gateway" an endpoint, not a ``middlebox``), since the
taggers learn one weight per class and a mixed class teaches them little about its other words
(grouped micro-F1, bench/RESULTS.md issue 14). :data:`TERMS` lists whole names of network things,
one or more words, by entity type.
"""

from __future__ import annotations

from collections.abc import Sequence

WORD_CLASSES: dict[str, frozenset[str]] = {
    "protocol": frozenset(
        "tcp udp icmp ip ipv4 ipv6 http https ftp sftp ftps ssh sip rtsp rtp dns dhcp smtp imap pop3 snmp bgp ospf "
        "telnet quic ntp mqtt rdp vpn gre ldap radius tftp nfs smb cifs irc xmpp rtmp hls sctp arp ipsec l2tp pptp "
        "openvpn wireguard tls ssl netbios upnp mdns coap".split()
    ),
    "middlebox": frozenset(
        "firewall firewalls dpi nat ids ips proxy cache monitor monitoring shaper shaping balancer balancing scanner "
        "filter inspection inspector accelerator optimizer waf translation detection prevention parental honeypot "
        "sniffer analyzer analyser loadbalancer ddos scrubber sandbox antivirus antimalware "
        "middlebox middleboxes packet deep intrusion load captive portal compression wan dlp".split()
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
    # "limit" is left out: the verb or noun of a constraint ("limit the bandwidth"), seldom the metric
    "qos_metric": frozenset("bandwidth quota quotas rate rates latency jitter throughput usage speed data consumption allowance".split()),
    "service": frozenset(
        "youtube netflix facebook skype email e-mail spotify twitter instagram whatsapp bittorrent torrent steam "
        "zoom teams hulu twitch tiktok dropbox google gmail amazon prime disney hbo linkedin reddit wikipedia slack "
        "webex discord telegram snapchat pinterest vimeo dailymotion onedrive icloud outlook office github "
        "xbox playstation fortnite roblox minecraft pandora deezer soundcloud kazaa emule utorrent chatgpt".split()
    ),
    "traffic_kind": frozenset("traffic streaming video gaming games voip music social media torrent p2p web browsing".split()),
    "negation": frozenset("not no cannot never nor without".split()),
    "group": frozenset(
        "students student guests guest visitors visitor faculty professors professor teachers teacher staff "
        "employees employee researchers researcher admins administrators administrator users user members member "
        "interns intern contractors contractor alumni undergraduates undergrads graduates postdocs tenants tenant "
        "customers customer clients client residents resident freshmen instructors lecturers engineers developers "
        "managers operators technicians kids children devices hosts iot phones laptops people everyone everybody".split()
    ),
    "place": frozenset(
        "labs lab laboratory laboratories dorms dorm dormitory dormitories library libraries campus building buildings "
        "classroom classrooms office offices department departments servers server gateway database databases "
        "internet network networks racks rack datacenter cafeteria hall halls floor wing subnet subnets "
        "vlan wifi wi-fi lan dmz cloud edge backbone core hospital clinic auditorium gym stadium residence "
        "residences headquarters branch site sites room rooms store printers printer cameras camera sensors sensor "
        "projectors projector kiosks kiosk".split()
    ),
    "weekday": frozenset(
        "monday tuesday wednesday thursday friday saturday sunday weekdays weekday weekend weekends "
        "mondays tuesdays wednesdays thursdays fridays saturdays sundays today tomorrow tonight".split()
    ),
    "bound": frozenset("maximum max minimum min most least more less than exceed exceeding above below under over up".split()),
    # clause structure: who does what ("Students shall download ...", "... to ensure students from
    # the labs are not ..."): a noun phrase that opens a clause and comes before an auxiliary is its subject
    # ("am" is left out: "6am")
    "auxiliary": frozenset("shall should can cannot could may might must will would need needs are is be were was do does did have has".split()),
    "clause_open": frozenset("that ensure ensures ensuring sure so if when whenever while unless because whether where which who".split()),
    "determiner": frozenset("all the every each any some our their its a an these those this".split()),
    "time_prep": frozenset("from to until till between and during starting start finish interval at".split()),
}


# Whole names of network things, one or more words, by the entity type they name: a span that is
# exactly one of them ("traffic shaper", "download rate") is that kind of thing, whatever the
# single words say apart ("traffic" is mostly traffic, "download" mostly a constraint). The
# span taggers and the CRF read them as gazetteer features (:func:`term_matches`), and
# :mod:`intent.augment` puts them into labelled spans of their type. Generic terms of the trade,
# not texts of the labelled file.
TERMS: dict[str, frozenset[str]] = {
    "middlebox": frozenset(
        (
            "firewall", "firewalls", "dpi", "nat", "ids", "ips", "proxy", "cache", "monitor", "shaper", "balancer",
            "loadbalancer", "scanner", "filter", "waf", "sniffer", "analyzer", "honeypot", "sandbox", "antivirus",
            "accelerator", "optimizer", "scrubber", "inspection", "middlebox", "middleboxes",
            "traffic shaper", "traffic shaping", "deep packet inspection", "packet inspection", "intrusion detection",
            "intrusion detection system", "intrusion prevention", "intrusion prevention system", "load balancer",
            "load balancing", "address translation", "network address translation", "parental control",
            "parental controls", "packet filter", "packet filtering", "content filter", "web filter", "url filter",
            "spam filter", "traffic monitor", "network monitor", "email scanner", "virus scanner", "malware scanner",
            "tcp accelerator", "wan optimizer", "wan optimization", "web proxy", "reverse proxy", "web cache",
            "application firewall", "web application firewall", "rate limiter", "ddos protection", "ddos scrubber",
            "captive portal", "data loss prevention", "ssl inspection", "packet sniffer", "traffic analyzer",
        )
    ),
    "qos_metric": frozenset(
        (
            "bandwidth", "quota", "quotas", "rate", "latency", "jitter", "throughput", "usage", "speed",
            "download rate", "upload rate", "download speed", "upload speed", "download limit", "upload limit",
            "bandwidth limit", "bandwidth cap", "data cap", "data plan", "data quota", "rate limit", "rate limits",
            "rate limiting", "network usage", "data usage", "bandwidth usage", "bandwidth consumption",
            "bandwidth rate", "transfer rate", "bit rate", "packet loss", "round trip time", "data allowance",
        )
    ),
    "traffic": frozenset(
        (
            "social media", "video streaming", "music streaming", "peer to peer", "file sharing", "online gaming",
            "voice over ip", "video calls", "video conferencing", "web browsing", "streaming traffic", "p2p traffic",
        )
    ),
    "service": frozenset(
        ("google drive", "google meet", "amazon prime", "prime video", "microsoft teams", "apple music", "disney plus", "youtube music")
    ),
}
TERM_TYPES: tuple[str, ...] = tuple(TERMS)
_TERM_WORDS: dict[str, tuple[tuple[tuple[str, ...], str], ...]] = {}
for _kind, _terms in TERMS.items():
    for _term in _terms:
        _words = tuple(_term.split())
        _TERM_WORDS[_words[0]] = (*_TERM_WORDS.get(_words[0], ()), (_words, _kind))


def term_matches(words: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(start, end, type)`` of each :data:`TERMS` name in the lower-case ``words``, longest first
    and left to right, never overlapping ("deep packet inspection", not "packet inspection")."""
    out, i = [], 0
    while i < len(words):
        found = max(
            ((len(t), kind) for t, kind in _TERM_WORDS.get(words[i], ()) if tuple(words[i : i + len(t)]) == t),
            default=None,
        )
        if found:
            out.append((i, i + found[0], found[1]))
            i += found[0]
        else:
            i += 1
    return out


# classes whose words may stand for one another inside a span of the same type (intent.augment)
SUBSTITUTES: tuple[str, ...] = ("service", "protocol", "group", "place", "weekday")


def _index_classes() -> dict[str, tuple[str, ...]]:
    index: dict[str, tuple[str, ...]] = {}
    for name, words in WORD_CLASSES.items():
        for word in words:
            index[word] = (*index.get(word, ()), name)
    return index


# word -> its classes in WORD_CLASSES order: every candidate span asks for each of its words, so
# a lookup, not a scan of every class (bench/intent_predict.py)
_CLASSES_OF = _index_classes()


def word_classes(word: str) -> tuple[str, ...]:
    """The classes ``word`` (lower-case) belongs to, in :data:`WORD_CLASSES` order."""
    return _CLASSES_OF.get(word, ())
