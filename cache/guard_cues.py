"""Cues that carry an answer: negators, numbers and units, opposite words, comparatives,
times, names and connectors. The semantic guard rejects a match when these differ.

General vocabulary only, not phrases from any test set; immutable, so module-level is fine.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final


def _table(pairs: dict[str, str]) -> MappingProxyType[str, str]:
    return MappingProxyType(pairs)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


def _pairs(text: str) -> tuple[tuple[str, str], ...]:
    return tuple((x, y) for x, _, y in (p.partition("/") for p in text.split()))


NEGATORS: Final = frozenset(
    {"not", "no", "never", "none", "nothing", "nobody", "nowhere", "neither", "nor", "without"}
)
# Verbs that carry a negation inside them ("forgot" = "can't remember").
NEGATIVE_VERBS: Final = frozenset({"forget", "forgetting"})

NUMBER_WORDS: Final = MappingProxyType(
    {
        "zero": 0.0,
        "two": 2.0,
        "three": 3.0,
        "four": 4.0,
        "five": 5.0,
        "six": 6.0,
        "seven": 7.0,
        "eight": 8.0,
        "nine": 9.0,
        "ten": 10.0,
        "eleven": 11.0,
        "twelve": 12.0,
        "thirteen": 13.0,
        "fourteen": 14.0,
        "fifteen": 15.0,
        "sixteen": 16.0,
        "seventeen": 17.0,
        "eighteen": 18.0,
        "nineteen": 19.0,
        "twenty": 20.0,
        "thirty": 30.0,
        "forty": 40.0,
        "fifty": 50.0,
        "sixty": 60.0,
        "seventy": 70.0,
        "eighty": 80.0,
        "ninety": 90.0,
        "hundred": 100.0,
        "thousand": 1000.0,
        "million": 1e6,
        "dozen": 12.0,
        "twice": 2.0,
        "thrice": 3.0,
        "third": 3.0,
        "fourth": 4.0,
        "fifth": 5.0,
        "sixth": 6.0,
        "seventh": 7.0,
        "eighth": 8.0,
        "ninth": 9.0,
        "tenth": 10.0,
        "half": 0.5,
        "quarter": 0.25,
    }
)

# Unit spellings -> canonical unit. Applied to the word right after a number.
UNITS: Final = _table(
    {
        **dict.fromkeys(["km", "kms", "kilometer", "kilometers", "kilometre", "kilometres"], "km"),
        **dict.fromkeys(["mi", "mile", "miles"], "mi"),
        **dict.fromkeys(["m", "meter", "meters", "metre", "metres"], "m"),
        **dict.fromkeys(["cm", "centimeter", "centimeters", "centimetre", "centimetres"], "cm"),
        **dict.fromkeys(["mm", "millimeter", "millimeters", "millimetre", "millimetres"], "mm"),
        **dict.fromkeys(["ft", "foot", "feet"], "ft"),
        **dict.fromkeys(["in", "inch", "inches", '"', "''"], "in"),
        **dict.fromkeys(["kg", "kgs", "kilo", "kilos", "kilogram", "kilograms"], "kg"),
        **dict.fromkeys(["g", "gram", "grams"], "g"),
        **dict.fromkeys(["lb", "lbs", "pound", "pounds"], "lb"),
        **dict.fromkeys(["oz", "ounce", "ounces"], "oz"),
        **dict.fromkeys(["l", "liter", "liters", "litre", "litres"], "l"),
        **dict.fromkeys(["ml", "milliliter", "milliliters"], "ml"),
        **dict.fromkeys(["b", "byte", "bytes"], "b"),
        **dict.fromkeys(["kb", "kilobyte", "kilobytes"], "kb"),
        **dict.fromkeys(["mb", "megabyte", "megabytes"], "mb"),
        **dict.fromkeys(["gb", "gig", "gigs", "gigabyte", "gigabytes"], "gb"),
        **dict.fromkeys(["tb", "terabyte", "terabytes"], "tb"),
        **dict.fromkeys(["hz", "hertz"], "hz"),
        **dict.fromkeys(["khz"], "khz"),
        **dict.fromkeys(["mhz"], "mhz"),
        **dict.fromkeys(["ghz"], "ghz"),
        **dict.fromkeys(["w", "watt", "watts"], "w"),
        **dict.fromkeys(["kw", "kilowatt", "kilowatts"], "kw"),
        **dict.fromkeys(["mah"], "mah"),
        **dict.fromkeys(["v", "volt", "volts"], "v"),
        **dict.fromkeys(["%", "percent", "pct"], "%"),
        **dict.fromkeys(["$", "usd", "dollar", "dollars", "buck", "bucks"], "usd"),
        **dict.fromkeys(["€", "eur", "euro", "euros"], "eur"),
        **dict.fromkeys(["£", "gbp"], "gbp"),
        **dict.fromkeys(["ms", "millisecond", "milliseconds"], "ms"),
        **dict.fromkeys(["s", "sec", "secs", "second", "seconds"], "s"),
        **dict.fromkeys(["min", "mins", "minute", "minutes"], "min"),
        **dict.fromkeys(["h", "hr", "hrs", "hour", "hours"], "h"),
        **dict.fromkeys(["d", "day", "days"], "day"),
        **dict.fromkeys(["week", "weeks"], "week"),
        **dict.fromkeys(["mo", "mos", "month", "months"], "month"),
        **dict.fromkeys(["y", "yr", "yrs", "year", "years"], "year"),
        **dict.fromkeys(["am", "a.m."], "am"),
        **dict.fromkeys(["pm", "p.m."], "pm"),
        **dict.fromkeys(["x", "times", "time"], "x"),
        **dict.fromkeys(["k"], "k"),
        **dict.fromkeys(["p"], "p"),
        **dict.fromkeys(["fps"], "fps"),
        **dict.fromkeys(["dpi"], "dpi"),
        **dict.fromkeys(["ppi"], "ppi"),
        **dict.fromkeys(["mp", "megapixel", "megapixels"], "mp"),
        **dict.fromkeys(["core", "cores"], "core"),
        **dict.fromkeys(["c", "celsius"], "c"),
        **dict.fromkeys(["f", "fahrenheit"], "f"),
        **dict.fromkeys(["st", "nd", "rd", "th"], ""),
        **dict.fromkeys(["gen", "generation"], ""),
        **dict.fromkeys(["per"], "per"),
    }
)

# Pairs whose members ask for different answers when one replaces the other.
ANTONYM_PAIRS: Final = _pairs(
    """
    enable/disable activate/deactivate start/stop begin/end open/close show/hide
    add/remove add/delete insert/delete install/uninstall create/remove create/delete
    upgrade/downgrade increase/decrease raise/lower up/down import/export upload/download
    push/pull encrypt/decrypt encode/decode compress/decompress zip/unzip lock/unlock
    subscribe/unsubscribe follow/unfollow login/logout connect/disconnect mount/unmount
    read/write get/set read/set buy/sell send/receive before/after above/below over/under
    more/less most/least min/max minimum/maximum first/last first/latest prefix/suffix
    starts/ends ascending/descending uppercase/lowercase upper/lower left/right top/bottom
    front/back forward/backward next/previous early/late earliest/latest oldest/latest
    old/new small/large cheap/expensive cheapest/expensive fast/slow high/low long/short
    light/dark inner/outer inbound/outbound incoming/outgoing public/private local/global
    local/remote local/utc sync/async synchronous/asynchronous internal/external input/output
    request/response client/server mutable/immutable shallow/deep include/exclude
    allow/deny accept/reject approve/decline free/pay new/used new/refurbished plus/minus
    true/false yes/no always/never horizontal/vertical serialize/deserialize expand/collapse
    maximize/minimize attach/detach enter/exit join/split merge/split apply/revert
    apply/rollback undo/redo commit/rollback morning/evening morning/night morning/afternoon
    afternoon/evening evening/night today/tomorrow today/yesterday tomorrow/yesterday
    weekday/weekend domestic/international north/south east/west wired/wireless
    online/offline digital/physical daily/weekly weekly/monthly monthly/yearly monthly/annual
    daily/monthly hot/cold warm/cool odd/even positive/negative sorted/unsorted
    within/after until/after by/after lend/borrow win/lose gain/lose
    good/bad best/worst better/worse strong/weak heavy/light full/empty
    inside/outside stdin/stdout stdout/stderr stdin/stderr
    development/production dev/prod staging/production test/production
    http/https dark/bright did/will was/will were/will
    all/one all/single all/none all/some all/this both/either both/one and/or must/can
    should/can for/while to/from into/from new/existing
    """
)

COMPARATIVES: Final = _words(
    """
    more less most least larger largest bigger biggest smaller smallest cheaper cheapest
    faster fastest slower slowest longer longest shorter shortest higher highest lower lowest
    newer older oldest better best worse worst greater greatest fewer fewest
    heavier heaviest lighter lightest earlier earliest later thinner thicker
    stronger weaker louder quieter brighter darker
    """
)

TIME_WORDS: Final = _words(
    """
    monday tuesday wednesday thursday friday saturday sunday weekday weekdays weekend weekends
    january february march april june july august september october november december
    today tonight tomorrow yesterday morning afternoon evening night noon midnight
    holiday holidays christmas
    """
)

# Names that are entities even when written in lower case.
KNOWN_ENTITIES: Final = _words(
    """
    windows linux ubuntu debian fedora centos macos osx mac android ios ipados chromeos wsl
    chrome firefox safari edge
    postgres postgresql mysql mariadb sqlite mongodb redis memcached elasticsearch
    json xml csv yaml yml toml html css javascript js typescript ts pdf png jpg svg
    python java rust golang ruby php kotlin swift c++ c#
    docker kubernetes nginx apache gunicorn uvicorn heroku aws azure gcp
    paypal venmo bitcoin klarna affirm visa mastercard amex
    usb hdmi bluetooth wifi ethernet thunderbolt lightning
    cors csrf jwt oauth ssl tls http https ssh ftp smtp tcp udp dns
    utc gmt
    """
)
HTTP_VERBS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# Connectors that give the words around them roles ("X to Y" differs from "Y to X").
ROLE_CONNECTORS: Final = frozenset(
    {"to", "into", "from", "instead", "than", "over", "vs", "versus"}
)
# Connectors whose two sides are interchangeable.
SYMMETRIC_CONNECTORS: Final = frozenset({"vs", "versus", "and", "or", "between"})

# HTTP status codes and the phrases people use for them.
STATUS_PHRASES: Final = _table(
    {
        "not found": "404",
        "internal server error": "500",
        "bad request": "400",
        "unauthorized": "401",
        "forbidden": "403",
        "method not allowed": "405",
        "too many requests": "429",
        "service unavailable": "503",
        "bad gateway": "502",
        "gateway timeout": "504",
        "no content": "204",
        "moved permanently": "301",
    }
)
