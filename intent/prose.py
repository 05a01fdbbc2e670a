"""Synthetic policy prose, labelled by construction: training text in the style operators write.

The alpha file holds short imperatives ("block netflix for students"). Operators' policies are
prose: statements of fact, passive voice, modal verbs and negation ("Peer-to-peer traffic is not
permitted on the guest network"), an organisation as the actor, conditions and asides that carry
no entity, and sentences that carry none at all. A tagger trained on commands alone misses the
operation in "will be denied" and reads "The university" as a target. :func:`policy_prose` writes
such sentences from grammar frames (:data:`RULES`) and vocabularies of this module and of
:mod:`intent.lexicon`, each entity labelled as the alpha file labels it (``tests/data/README.md``):
an operation keeps its auxiliaries and negation but not the verb after "allowed to" ("[are allowed
to] access") nor the agent of a passive ("[is dropped] by the [firewall]"), a target its preposition
or is the bare subject, a lone "from X" is a target and "from X ... to Y" an origin and a
destination, "limited"/"capped" are QoS constraints and "prioritized" a middlebox, the unit keeps
its period ("GB per month"). Operations are composed from modal verbs or auxiliaries and many verbs
(:data:`VERBS`), so a tagger learns the construction rather than a list of phrases.

The frames and word lists were written for this module; they are not the development set's
sentences, though the frames of 2026-12-08 were written after reading its errors (bench/RESULTS.md
checks them on a holdout written afterwards) (``tests/test_intent_prose.py`` checks that no generated sentence is one of them, and
bench/RESULTS.md reports how many of the set's entity texts the generated text contains).
Deterministic for a given seed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from intent.data import LabelledIntent, Span
from intent.lexicon import TERMS

Part = tuple[str, str | None]  # (text, entity type or None)
Phrase = list[Part]

# -- vocabularies --------------------------------------------------------------------------------
POPULATIONS = (
    "students", "residents", "guests", "visitors", "staff", "employees", "contractors", "faculty", "researchers",
    "interns", "subscribers", "customers", "tenants", "patients", "members", "users", "guest users", "lab users",
    "part-time staff", "library patrons", "hotel guests", "support agents", "graduate students", "new hires",
    "volunteers", "vendors", "consultants", "teachers", "pupils", "nurses", "doctors", "trainees", "auditors",
    "home users", "mobile customers", "enterprise customers", "prepaid customers", "remote workers", "administrators",
)
DEVICES = (  # things on the network named as a rule's subject: a target like a population
    "printers", "IP cameras", "IoT devices", "personal devices", "lab computers", "kiosks", "smart TVs", "sensors",
    "guest laptops", "company phones", "building controllers", "thin clients", "test machines", "shared workstations",
    "unmanaged devices", "staff laptops", "student laptops", "card readers", "voice handsets", "digital signage",
)
UNITS = ("sales", "marketing", "finance", "legal", "research", "support", "design", "facilities", "admissions",
         "payroll", "engineering", "procurement", "press", "sports")  # fmt: skip
PLACES = (
    "residence halls", "dormitories", "dorms", "labs", "computer labs", "library", "main campus", "north campus",
    "science building", "arts building", "student center", "cafeteria", "lecture theatres", "classrooms",
    "guest network", "wireless network", "wired network", "staff network", "research network", "management network",
    "data center", "server room", "branch office", "head office", "regional offices", "warehouse", "factory floor",
    "call center", "retail stores", "clinic", "hospital network", "public Wi-Fi", "VPN", "DMZ", "core network",
    "access network", "backbone", "cloud tenants", "lab subnet", "voice VLAN", "printer VLAN", "IoT VLAN",
)
ENDPOINTS = (
    "the internet", "the data center", "the web servers", "the database servers", "the file servers", "the mail servers",
    "the payment servers", "the research cluster", "the backup site", "the cloud", "the partner network",
    "the student portal", "the HR system", "the finance servers", "external hosts", "the DMZ", "the core routers",
    "the campus network", "the branch offices", "the headquarters", "the lab machines", "the staff laptops",
    "the guest network", "the app servers", "the storage array", "the video servers", "remote sites",
)
TRAFFIC = (
    "peer-to-peer traffic", "video streaming", "streaming traffic", "online gaming", "gaming traffic", "social media",
    "file sharing", "torrent traffic", "VoIP traffic", "voice traffic", "video calls", "web browsing", "web traffic",
    "all traffic", "bulk transfers", "software updates", "cloud backups", "music streaming", "live video",
    "video conferencing", "instant messaging", "remote access", "crypto mining", "adult content", "gambling sites",
    "large downloads", "multicast traffic", "guest traffic", "encrypted traffic", "unknown traffic", "outbound traffic",
    "inbound traffic", "IoT traffic", "game downloads", "video uploads", "P2P traffic", "connections", "outbound connections",
    "file transfers", "remote desktop sessions", "data transfers", "downloads", "uploads", "spam", "bulk email",
    "video chat", "voice calls", "replication traffic", "management traffic", "internet access", "proxy services",
    "VPN services", "hotspot use", "scanning traffic", "port scans", "unencrypted traffic", "web downloads",
)
# a kind of traffic named by an activity and a head noun ("file sharing applications", "gaming
# sites"), so that a whole noun phrase is one span and its head is not read as a target
ACTIVITIES = ("file sharing", "peer-to-peer", "streaming", "video streaming", "gaming", "social networking", "messaging",
              "cloud storage", "remote access", "remote control", "proxy", "torrent", "download", "music", "adult",
              "gambling", "dating", "shopping", "crypto", "chat", "video sharing", "screen sharing", "webcam")  # fmt: skip
HEADS = ("sites", "services", "applications", "apps", "tools", "software", "clients", "platforms", "websites", "programs")
SERVICES = (
    "Netflix", "YouTube", "Facebook", "Instagram", "TikTok", "Twitch", "Spotify", "Steam", "Skype", "WhatsApp", "Zoom",
    "Dropbox", "Snapchat", "Discord", "Telegram", "Reddit", "Hulu", "Vimeo", "iCloud", "OneDrive", "Slack", "Webex",
    "Roblox", "Fortnite", "BitTorrent", "uTorrent", "Xbox Live", "PlayStation Network", "Amazon Prime", "Google Meet",
    "Apple Music", "LinkedIn", "Pinterest", "email", "webmail", "file servers", "game servers", "chat servers",
)
PROTOCOLS = ("SSH", "Telnet", "FTP", "SFTP", "RDP", "SMTP", "IMAP", "SNMP", "SIP", "RTSP", "DNS", "NTP", "HTTP", "HTTPS",
             "TFTP", "SMB", "LDAP", "IPsec", "QUIC", "ICMP", "UDP", "TCP", "BGP")  # fmt: skip
MIDDLEBOXES = tuple(sorted(TERMS["middlebox"] - {"middlebox", "middleboxes", "firewalls"}))
METRICS = ("bandwidth", "quota", "download rate", "upload rate", "data allowance", "data cap", "download speed",
           "upload speed", "throughput", "monthly quota", "daily quota", "bandwidth allowance", "rate limit")  # fmt: skip
RATE_UNITS = ("Mbps", "Gbps", "kbps", "mbps", "megabits per second", "Mb/s")
VOLUME_UNITS = ("GB per day", "GB per week", "GB per month", "MB per day", "TB per month", "gigabytes per week",
                "GB a day", "GB a month", "GB per billing cycle")  # fmt: skip
ORGANISATIONS = (
    "The university", "The college", "The company", "The provider", "The operator", "Network Services", "IT Services",
    "The IT department", "The security office", "The council", "The school district", "The network team",
    "Campus IT", "The service desk", "Information Technology", "The network operations center", "The hospital trust",
    "We", "Northwind Telecom", "Riverside College", "Fabrikam", "Tailspin Networks", "Woodgrove University",
    "The Office of the CIO", "The Department of Computing", "The library service",
)
HOURS = ("6am", "7am", "8am", "9am", "10am", "noon", "1pm", "2pm", "5pm", "6pm", "7pm", "8pm", "9pm", "10pm", "11pm",
         "midnight", "07:00", "08:30", "09:00", "17:00", "18:00", "22:00", "23:00", "00:00", "6 am", "10 pm")  # fmt: skip
ASIDES = (
    "during the exam period", "on weekdays", "at all times", "without exception", "unless an exception is approved",
    "for security reasons", "to protect the network", "under this policy", "by default", "until further notice",
    "in line with the licence terms", "as part of the acceptable use policy", "while the upgrade is in progress",
    "to keep the network usable for everyone", "where this is technically possible", "on request",
)
CONDITIONS = (
    "If the uplink is congested", "When the term starts", "Unless the dean approves an exception", "During peak hours",
    "Where a complaint is received", "When a device is found infected", "If abuse is reported", "After a security incident",
    "In accordance with the law", "Subject to the terms of service", "For the duration of the pilot", "At the moment",
    "Since the last audit", "Following the review of the network", "Where possible",
)
EMPTY = (
    "This policy applies to everyone who uses the network.", "Questions about this policy go to the service desk.",
    "{org} reviews this policy once a year.", "{org} may change this policy at any time.",
    "Breaches of this policy are handled under the disciplinary procedure.", "Users are responsible for their own accounts.",
    "Passwords must never be shared.", "{org} keeps records as required by law.", "The network is provided for study and work.",
    "This section explains how complaints are handled.", "Support is available from eight to six on working days.",
    "{org} publishes planned maintenance on its status page.", "Nothing here affects statutory rights.",
    "Definitions of the terms used are in the appendix.", "Each user must accept the terms before connecting.",
    "{org} does not monitor the content of private messages.", "Exceptions are recorded in the register.",
)

# duties and acts that are no network rule, so that a modal verb or an organisation as the actor
# alone does not make an operation ("Staff must complete the security training")
DUTIES = ("complete the security training", "sign the user agreement", "keep their passwords secret", "contact the service desk",
          "register for an account", "attend the induction", "follow the instructions of staff", "update their contact details",
          "change their passwords every year", "accept the terms of service", "pay the monthly fee", "return their equipment",
          "submit a ticket", "carry their ID cards", "protect their devices", "log out after use", "keep software up to date",
          "notify the security office of a lost device", "consult the policy owner", "take part in the annual audit")  # fmt: skip
ADMIN_ACTS = ("reviews", "publishes", "updates", "approves", "audits", "explains", "documents", "announces", "owns", "revises",
              "will publish", "may update", "must approve")  # fmt: skip
ADMIN_OBJECTS = ("this policy", "the annual report", "the terms of service", "the list of exceptions", "its procedures",
                 "the service catalogue", "the maintenance calendar", "the guidance for new users", "the fee schedule")  # fmt: skip
# relative clauses after a subject, carrying no entity ("Visitors who travel ...")
RELATIVES = ("who live on campus", "who have not registered", "who travel", "that are not managed by IT", "who joined this year",
             "that the university owns", "who work from home", "that fail the security check", "who share a room")  # fmt: skip

# whole operation phrases, for a population subject (modal), a thing subject (passive) and an actor (active)
MODAL_OPS = ("may not use", "must not use", "cannot use", "are not allowed to use", "are not permitted to use",
             "may use", "are allowed to use", "are permitted to use", "can use", "may not access", "must not access",
             "are allowed to access", "cannot reach", "may not run", "must not run", "are not allowed to run",
             "may not stream", "are prohibited from using", "are blocked from", "will be denied", "may only use")  # fmt: skip
PASSIVE_OPS = ("is not permitted", "is permitted", "is blocked", "is not blocked", "is allowed", "is not allowed", "is denied",
               "is prohibited", "is forbidden", "is disabled", "is enabled", "will be blocked", "will be denied",
               "must be blocked", "must not be blocked", "has been blocked", "has been disabled", "is restricted",
               "is dropped", "is rejected", "is refused", "remains blocked", "is not supported", "is available",
               "will be allowed", "is always allowed", "is not filtered", "is filtered")  # fmt: skip
ACTIVE_OPS = ("blocks", "allows", "permits", "denies", "prohibits", "does not allow", "does not permit", "does not block",
              "will block", "will allow", "may block", "may disable", "disables", "filters", "restricts", "forbids",
              "has blocked", "has enabled", "no longer allows", "still allows", "will deny")  # fmt: skip
DEPLOY_OPS = ("will install", "has installed", "deploys", "operates", "has deployed", "will deploy", "runs", "will remove",
              "has removed", "will add", "maintains", "will retire", "uses")  # fmt: skip
PASSIVE_DEPLOY = ("is installed", "has been installed", "is deployed", "will be deployed", "has been removed", "will be removed",
                  "is in place", "was added", "is required")  # fmt: skip
CONSTRAINTS_PASSIVE = ("limited", "capped", "throttled", "restricted", "rate limited", "reduced", "shaped down")
GRANT_OPS = ("receive", "are given", "are guaranteed", "get", "are entitled to", "are offered", "are allocated", "keep",
             "retain", "will receive", "are granted")  # fmt: skip
EXEMPT_OPS = ("are exempt from", "are not subject to", "bypass", "are excluded from", "are not covered by")
# open-class operations: a modal or an auxiliary composed with one of many verbs (base form,
# participle), so that the taggers learn the construction ("may not resell", "is quarantined"), not a
# list of phrases; real policies use far more verbs than any list of whole phrases holds
VERBS = (("use", "used"), ("run", "run"), ("host", "hosted"), ("install", "installed"), ("operate", "operated"),
         ("stream", "streamed"), ("share", "shared"), ("send", "sent"), ("download", "downloaded"), ("upload", "uploaded"),
         ("resell", "resold"), ("offer", "offered"), ("provide", "provided"), ("support", "supported"),
         ("configure", "configured"), ("set up", "set up"), ("initiate", "initiated"), ("forward", "forwarded"),
         ("relay", "relayed"), ("redirect", "redirected"), ("reroute", "rerouted"), ("suspend", "suspended"),
         ("quarantine", "quarantined"), ("isolate", "isolated"), ("disconnect", "disconnected"), ("terminate", "terminated"),
         ("encrypt", "encrypted"), ("schedule", "scheduled"), ("carry", "carried"), ("serve", "served"),
         ("mirror", "mirrored"), ("record", "recorded"), ("register", "registered"), ("approve", "approved"),
         ("tolerate", "tolerated"), ("accept", "accepted"), ("reserve", "reserved"), ("publish", "published"),
         ("open", "opened"), ("close", "closed"), ("remove", "removed"), ("enable", "enabled"), ("disable", "disabled"),
         ("block", "blocked"), ("allow", "allowed"), ("permit", "permitted"), ("deny", "denied"), ("refuse", "refused"))  # fmt: skip
MODALS = ("may", "may not", "must", "must not", "cannot", "can", "can only", "may only", "will", "will not", "should not",
          "are not allowed to", "are allowed to", "are required to", "are permitted to", "are not permitted to")  # fmt: skip
AUXILIARIES = ("is", "is not", "will be", "will not be", "must be", "must not be", "has been", "may be", "can be",
               "is never", "is always", "is automatically", "will no longer be", "is only")  # fmt: skip
ACCESS_OPS = ("may only reach", "can only reach", "may not reach", "cannot reach", "must not reach", "can reach",
              "may only contact", "may access", "may not access", "can only access")  # fmt: skip
CONNECT_OPS = ("may only connect", "may not connect", "can connect", "cannot connect", "must only connect", "may only communicate",
               "may not communicate", "can communicate")  # fmt: skip
HAVE_ACCESS_OPS = ("have", "do not have", "will have", "will not have", "lose", "retain", "keep", "are given", "are denied",
                   "are granted", "will lose", "no longer have", "still have", "are refused")  # fmt: skip
FLOW_OPS = ("must pass through", "passes through", "is routed through", "is sent through", "goes through", "must go through",
            "is forwarded through")  # fmt: skip


def _pick(rng: random.Random, options: tuple[str, ...]) -> str:
    return rng.choice(options)


def _third_person(verb: str) -> str:
    """ "carry" -> "carries", "set up" -> "sets up", "refuse" -> "refuses"."""
    head, _, rest = verb.partition(" ")
    if head.endswith("y") and head[-2:-1] not in "aeiou":
        head = head[:-1] + "ie"
    elif head.endswith(("s", "sh", "ch", "x")):
        head += "e"
    return f"{head}s" + (f" {rest}" if rest else "")


def _modal_op(rng: random.Random) -> Phrase:
    """ "may not resell", or one of the whole phrases of :data:`MODAL_OPS`; after "allowed to" or
    "prohibited from" the verb is left out of the operation, as in the alpha file's "[Staff] [is
    allowed to] access [ftp]"."""
    op = _pick(rng, MODAL_OPS) if rng.random() < 0.5 else f"{_pick(rng, MODALS)} {rng.choice(VERBS)[0]}"
    for word in (" to ", " from "):
        if word in op:
            head, verb = op.rsplit(word, 1)
            return [(head + word.rstrip(), "operation"), (f" {verb}", None)]
    return [(op, "operation")]


def _passive_op(rng: random.Random) -> str:
    """ "will no longer be forwarded", or one of the whole phrases of :data:`PASSIVE_OPS`."""
    return _pick(rng, PASSIVE_OPS) if rng.random() < 0.5 else f"{_pick(rng, AUXILIARIES)} {rng.choice(VERBS)[1]}"


def _active_op(rng: random.Random) -> str:
    """ "quarantines", "does not resell", "will redirect", or one of :data:`ACTIVE_OPS`."""
    if rng.random() < 0.5:
        return _pick(rng, ACTIVE_OPS)
    verb = rng.choice(VERBS)[0]
    return rng.choice((_third_person(verb), _third_person(verb), f"does not {verb}", f"will {verb}", f"may {verb}"))


def _population(rng: random.Random) -> str:
    word = _pick(rng, POPULATIONS) if rng.random() < 0.85 else f"the {_pick(rng, UNITS)} {rng.choice(('team', 'department', 'staff', 'group'))}"
    return rng.choice(("", "", "all ", "")) + word


def _place(rng: random.Random) -> str:
    return rng.choice(("the ", "the ", "our ", "every ", "all ")) + _pick(rng, PLACES)


def _scope(rng: random.Random) -> Part:
    """A target: a population or a place, with its preposition."""
    if rng.random() < 0.5:
        return (f"{rng.choice(('for', 'for', 'to', 'of'))} {_population(rng)}", "target")
    return (f"{rng.choice(('in', 'on', 'on', 'at', 'across', 'within'))} {_place(rng)}", "target")


def _subject_tail(rng: random.Random) -> Part | str:
    """What may follow a population as subject: a relative clause ("who travel", no entity), or
    where it is ("in the library": a target of its own), or nothing."""
    roll = rng.random()
    if roll < 0.15:
        return _pick(rng, RELATIVES)
    if roll < 0.3:
        return (f"{rng.choice(('in', 'on', 'at'))} {_place(rng)}", "target")
    return ""


def _thing(rng: random.Random) -> Phrase:
    """What an operation applies to: traffic, a service, or a protocol (with a trailing noun left unlabelled)."""
    roll = rng.random()
    if roll < 0.3:
        return [(_pick(rng, TRAFFIC), "traffic")]
    if roll < 0.45:
        return [(f"{_pick(rng, ACTIVITIES)} {_pick(rng, HEADS)}", "traffic")]
    if roll < 0.75:
        name = _pick(rng, SERVICES)
        if rng.random() < 0.3 and " " not in name:
            return [(f"{name} traffic", "service")]
        return [(name, "service")]
    protocol = _pick(rng, PROTOCOLS)
    return [(protocol, "protocol"), (f" {rng.choice(('access', 'connections', 'traffic', 'sessions'))}", None)] if rng.random() < 0.6 else [(protocol, "protocol")]


def _things(rng: random.Random) -> Phrase:
    first = _thing(rng)
    if rng.random() < 0.25:
        return [*first, (rng.choice((" and ", " or ", ", ")), None), *_thing(rng)]
    return first


def _window(rng: random.Random) -> Phrase:
    a, b = rng.sample(HOURS, 2)
    roll = rng.random()
    if roll < 0.5:
        return [(f"from {a}", "start"), (" ", None), (f"to {b}", "end")]
    if roll < 0.8:
        return [(f"between {a}", "start"), (" ", None), (f"and {b}", "end")]
    if roll < 0.9:
        return [(f"after {a}", "start")]
    return [(f"until {b}", "end")]


def _qos(rng: random.Random) -> Phrase:
    """A QoS value and unit: a rate or a volume per period."""
    value = str(rng.choice((1, 2, 3, 5, 8, 10, 15, 20, 25, 50, 100, 200, 250, 500, 1000)))
    unit = _pick(rng, RATE_UNITS if rng.random() < 0.6 else VOLUME_UNITS)
    return [(value, "qos_value"), (" ", None), (unit, "qos_unit")]


def _join(*pieces: Phrase | Part | str) -> Phrase:
    """Phrases, labelled parts and plain strings in order, separated by single spaces."""
    out: Phrase = []
    for piece in pieces:
        parts: Phrase = [(piece, None)] if isinstance(piece, str) else [piece] if isinstance(piece, tuple) else piece
        if not parts or not parts[0][0]:
            continue
        if out:
            out.append((" ", None))
        out.extend(parts)
    return out


def _maybe(rng: random.Random, p: float, make: Callable[[], Phrase | Part | str]) -> Phrase | Part | str:
    return make() if rng.random() < p else ""


def _tail(rng: random.Random) -> Phrase | str:
    return _maybe(rng, 0.35, lambda: _pick(rng, ASIDES))  # type: ignore[return-value]


# -- frames --------------------------------------------------------------------------------------
def population_rule(rng: random.Random) -> Phrase:
    """"Guest users may not use Steam on the wireless network after 10pm."."""
    subject = _population(rng)
    return _join((subject[:1].upper() + subject[1:], "target"), _subject_tail(rng), _modal_op(rng), _things(rng),
                 _maybe(rng, 0.6, lambda: _scope(rng)), _maybe(rng, 0.25, lambda: _window(rng)), _tail(rng))  # fmt: skip


def passive_rule(rng: random.Random) -> Phrase:
    """"Telnet access is disabled on every lab subnet by default."."""
    things = _things(rng)
    return _join(things, (_passive_op(rng), "operation"), _maybe(rng, 0.85, lambda: _scope(rng)),
                 _maybe(rng, 0.3, lambda: _scope(rng)), _maybe(rng, 0.25, lambda: _window(rng)), _tail(rng))  # fmt: skip


def actor_rule(rng: random.Random) -> Phrase:
    """"The college blocks TikTok and Twitch for visitors."."""
    return _join(_pick(rng, ORGANISATIONS), (_active_op(rng), "operation"), _things(rng),
                 _maybe(rng, 0.8, lambda: _scope(rng)), _maybe(rng, 0.2, lambda: _window(rng)), _tail(rng))  # fmt: skip


def flow_rule(rng: random.Random) -> Phrase:
    """"Traffic from the labs to the internet must pass through the web proxy" / "is dropped by the firewall"."""
    origin, destination = _place(rng), _pick(rng, ENDPOINTS)
    pair = [(f"from {origin}", "origin"), (" ", None), (f"to {destination}", "destination")]
    if rng.random() < 0.3:
        pair = [(f"between {origin}", "origin"), (" ", None), (f"and {destination}", "destination")]
    subject = rng.choice(([("Traffic", "traffic")], [("All traffic", "traffic")], _thing(rng), [("Connections", "traffic")]))
    subject = [(subject[0][0][:1].upper() + subject[0][0][1:], subject[0][1]), *subject[1:]]
    roll = rng.random()
    if roll < 0.45:
        middlebox = (_pick(rng, MIDDLEBOXES), "middlebox")
        if rng.random() < 0.35:  # "is dropped by the DNS firewall": the agent is no part of the operation
            return _join(subject, pair, (_passive_op(rng), "operation"), rng.choice(("by the", "by a", "by our")), middlebox, _tail(rng))
        return _join(subject, pair, (_pick(rng, FLOW_OPS), "operation"), rng.choice(("the", "a", "our")), middlebox, _tail(rng))
    if roll < 0.75:
        return _join(subject, pair, (_passive_op(rng), "operation"), _maybe(rng, 0.3, lambda: _window(rng)), _tail(rng))
    return _join(subject, pair, "is", (rng.choice(CONSTRAINTS_PASSIVE), "qos_constraint"), rng.choice(("to", "at")), _qos(rng), _tail(rng))


def middlebox_rule(rng: random.Random) -> Phrase:
    """"IT Services has deployed an intrusion prevention system in the data center."."""
    middlebox = (_pick(rng, MIDDLEBOXES), "middlebox")
    where: Phrase | Part
    if rng.random() < 0.4:
        where = [(f"between {_place(rng)}", "origin"), (" ", None), (f"and {_pick(rng, ENDPOINTS)}", "destination")]
    else:
        where = _scope(rng)
    if rng.random() < 0.5:
        return _join(_pick(rng, ORGANISATIONS), (_pick(rng, DEPLOY_OPS), "operation"), rng.choice(("a", "the", "its own")), middlebox,
                     where, _maybe(rng, 0.2, lambda: _window(rng)), _tail(rng))  # fmt: skip
    return _join(rng.choice(("A", "The", "An extra")), middlebox, (_pick(rng, PASSIVE_DEPLOY), "operation"), where, _tail(rng))


def qos_rule(rng: random.Random) -> Phrase:
    """"Hotel guests are capped at 5 Mbps"; "A quota of 20 GB per week applies to all students"."""
    roll = rng.random()
    if roll < 0.35:
        subject = _population(rng)
        return _join((subject[:1].upper() + subject[1:], "target"), "are", (rng.choice(CONSTRAINTS_PASSIVE), "qos_constraint"),
                     rng.choice(("to", "at")), _qos(rng), _maybe(rng, 0.3, lambda: (f"of {_pick(rng, METRICS)}", None)),
                     _maybe(rng, 0.4, lambda: _scope(rng)), _maybe(rng, 0.25, lambda: _window(rng)), _tail(rng))  # fmt: skip
    if roll < 0.6:
        return _join(rng.choice(("A", "The")), (_pick(rng, METRICS), "qos_metric"), "of", _qos(rng),
                     (rng.choice(("applies", "is applied", "is set")), "operation"), _scope(rng), _tail(rng))  # fmt: skip
    if roll < 0.8:
        things = _things(rng)
        return _join(things, _maybe(rng, 0.5, lambda: _scope(rng)), rng.choice(("is", "will be")),
                     (rng.choice(CONSTRAINTS_PASSIVE), "qos_constraint"), rng.choice(("to", "at")), _qos(rng),
                     _maybe(rng, 0.3, lambda: _window(rng)), _tail(rng))  # fmt: skip
    return _join(rng.choice(("The", "Their")), (_pick(rng, METRICS), "qos_metric"), _scope(rng), rng.choice(("is", "will be")),
                 (rng.choice(CONSTRAINTS_PASSIVE), "qos_constraint"), "to", _qos(rng), _tail(rng))  # fmt: skip


def grant_rule(rng: random.Random) -> Phrase:
    """"Residents receive a data allowance of 200 GB per month"; "Sales staff are exempt from the web filter"."""
    subject = _population(rng)
    target = (subject[:1].upper() + subject[1:], "target")
    if rng.random() < 0.65:
        if rng.random() < 0.6:  # "a quota of 20 GB per week", "up to 50 Mbps of bandwidth"
            amount = [(rng.choice(("a ", "the ", "a ")), None), (_pick(rng, METRICS), "qos_metric"), (" of ", None), *_qos(rng)]
        else:
            amount = [(rng.choice(("up to ", "at least ", "")), None), *_qos(rng), (" of ", None), (_pick(rng, METRICS), "qos_metric")]
        return _join(target, _subject_tail(rng), (_pick(rng, GRANT_OPS), "operation"), amount,
                     _maybe(rng, 0.4, lambda: _scope(rng)), _maybe(rng, 0.2, lambda: _window(rng)), _tail(rng))  # fmt: skip
    return _join(target, (_pick(rng, EXEMPT_OPS), "operation"), "the", (_pick(rng, MIDDLEBOXES), "middlebox"),
                 _maybe(rng, 0.4, lambda: _scope(rng)), _tail(rng))  # fmt: skip


def access_rule(rng: random.Random) -> Phrase:
    """"Contractors can only reach the file servers"; "IP cameras may only connect to the video servers";
    "Interns do not have access to the HR system": a population or a device and what it may reach."""
    subject = _population(rng) if rng.random() < 0.6 else rng.choice(("", "", "all ")) + _pick(rng, DEVICES)
    target = (subject[:1].upper() + subject[1:], "target")
    endpoint = _pick(rng, ENDPOINTS)
    roll = rng.random()
    if roll < 0.35:
        reach: Phrase = [(_pick(rng, ACCESS_OPS), "operation"), (" ", None), (endpoint, "destination")]
    elif roll < 0.65:
        op = _pick(rng, CONNECT_OPS)
        reach = [(op, "operation"), (" ", None), (f"{'with' if 'communicate' in op else 'to'} {endpoint}", "destination")]
    else:
        reach = [(_pick(rng, HAVE_ACCESS_OPS), "operation"), (" access ", None), (f"to {endpoint}", "destination")]
    return _join(target, _subject_tail(rng), reach, _maybe(rng, 0.3, lambda: _scope(rng)), _maybe(rng, 0.2, lambda: _window(rng)), _tail(rng))


def priority_rule(rng: random.Random) -> Phrase:
    """"VoIP traffic is prioritized over all other traffic"; "The provider prioritizes video calls";
    "Video calls are given priority by the traffic shaper" (prioritising is a middlebox in the alpha file)."""
    roll = rng.random()
    if roll < 0.45:
        return _join(_things(rng), _maybe(rng, 0.4, lambda: _scope(rng)), rng.choice(("is", "will be", "are", "must be")),
                     (rng.choice(("prioritized", "prioritised")), "middlebox"), _maybe(rng, 0.4, lambda: f"over {_pick(rng, TRAFFIC)}"),
                     _maybe(rng, 0.3, lambda: _scope(rng)), _maybe(rng, 0.3, lambda: _window(rng)), _tail(rng))  # fmt: skip
    if roll < 0.75:
        verb = rng.choice((("prioritizes", None), ("will", "prioritize"), ("may", "prioritize"), ("does not", "prioritize")))
        lead = [(verb[0], "middlebox")] if verb[1] is None else [(verb[0], None), (" ", None), (verb[1], "middlebox")]
        return _join(_pick(rng, ORGANISATIONS), lead, _things(rng), _maybe(rng, 0.5, lambda: _scope(rng)),
                     _maybe(rng, 0.3, lambda: _window(rng)), _tail(rng))  # fmt: skip
    return _join(_things(rng), _maybe(rng, 0.4, lambda: _scope(rng)), (rng.choice(("is given", "are given", "will be given", "receives")), "operation"),
                 rng.choice(("priority", "high priority", "precedence")), _maybe(rng, 0.5, lambda: [("by the ", None), (_pick(rng, MIDDLEBOXES), "middlebox")]),
                 _maybe(rng, 0.3, lambda: _window(rng)), _tail(rng))  # fmt: skip


RULES: tuple[Callable[[random.Random], Phrase], ...] = (
    population_rule, passive_rule, actor_rule, flow_rule, middlebox_rule, qos_rule, grant_rule, access_rule, priority_rule,
)  # fmt: skip


def _sentence(rng: random.Random) -> Phrase:
    """One rule, sometimes after a condition, sometimes two joined by "but"/"; ", or a sentence with nothing to extract."""
    if rng.random() < 0.12:
        return [(_empty(rng), None)]
    rule = rng.choice(RULES)(rng)
    if rng.random() < 0.2:
        rule = [(_pick(rng, CONDITIONS) + ", ", None), *_lower_first(rule)]
    elif rng.random() < 0.15:
        rule = [*rule, (rng.choice((", but ", "; ", ", while ")), None), *_lower_first(rng.choice(RULES)(rng))]
    first, kind = rule[0]
    return [(first[:1].upper() + first[1:], kind), *rule[1:], (".", None)]


def _empty(rng: random.Random) -> str:
    """A sentence with nothing to extract: a fixed one, a population's duty or an organisation's paperwork."""
    roll = rng.random()
    if roll < 0.5:
        return _pick(rng, EMPTY).format(org=_pick(rng, ORGANISATIONS))
    if roll < 0.8:
        subject = _population(rng)
        return f"{subject[:1].upper()}{subject[1:]} {_pick(rng, MODALS)} {_pick(rng, DUTIES)}."
    return f"{_pick(rng, ORGANISATIONS)} {_pick(rng, ADMIN_ACTS)} {_pick(rng, ADMIN_OBJECTS)}."


def _lower_first(phrase: Phrase) -> Phrase:
    """The phrase with its first word in lower case, where it is an ordinary capitalised word ("The", "Guests", not "IoT" or "Netflix")."""
    text, kind = phrase[0]
    word = text.split(" ")[0]
    if word[1:2].islower() and (kind is None or kind in ("target", "traffic")) and word not in SERVICES and word not in ORGANISATIONS[16:]:
        text = text[:1].lower() + text[1:]
    return [(text, kind), *phrase[1:]]


def to_intent(phrase: Phrase) -> LabelledIntent:
    text, spans = "", []
    for chunk, kind in phrase:
        if kind:
            spans.append(Span(kind, len(text), len(text) + len(chunk), chunk))
        text += chunk
    return LabelledIntent(text, tuple(spans))


@dataclass(frozen=True)
class ProseConfig:
    sentences: int = 600
    seed: int = 0


def policy_prose(config: ProseConfig = ProseConfig()) -> list[LabelledIntent]:
    """``config.sentences`` distinct labelled sentences of policy prose."""
    rng = random.Random(config.seed)
    out: dict[str, LabelledIntent] = {}
    for _ in range(20 * config.sentences):
        if len(out) == config.sentences:
            break
        intent = to_intent(_sentence(rng))
        out.setdefault(intent.text, intent)
    return list(out.values())
