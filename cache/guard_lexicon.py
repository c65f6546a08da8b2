"""General-purpose English and tech lexicons the semantic guard reads questions with.

Everything here is general vocabulary (chat shorthand, contractions, number words, units,
negators, antonym pairs, synonyms, brand and platform names), not phrases from any test set.
All tables are immutable so they can live at module level.
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


# Phrases rewritten before tokenising (longest first is applied by the caller).
PHRASES: Final = _table(
    {
        # politeness and question framing that carries no answer
        "is it possible to": "can i",
        "is it possible for me to": "can i",
        "would it be possible to": "can i",
        "am i able to": "can i",
        "is there a way to": "how to",
        "is there any way to": "how to",
        "what is the best way to": "how to",
        "what's the best way to": "how to",
        "whats the best way to": "how to",
        "what is the right way to": "how to",
        "what is the recommended way to": "how to",
        "what is the way to": "how to",
        "what is the easiest way to": "how to",
        "the best way to": "how to",
        "the right way to": "how to",
        "the recommended way to": "how to",
        "the proper way to": "how to",
        "the correct way to": "how to",
        "the easiest way to": "how to",
        "best way to": "how to",
        "right way to": "how to",
        "what is the command to": "how to",
        "what is the syntax for": "how to",
        "what is the syntax to": "how to",
        "how are they different": "compare",
        "how do they differ": "compare",
        "how is it different": "compare",
        "how does it differ": "compare",
        "what is the command that": "how to",
        "what is the cmd to": "how to",
        "what command": "how to",
        "which command": "how to",
        "how would i": "how do i",
        "how should i": "how do i",
        "how can i": "how do i",
        "how could i": "how do i",
        "show me how": "tell how",
        "tell me how": "tell how",
        "let me know how": "tell how",
        "help me": "",
        "thank you": "thanks",
        "thanks you": "thanks",
        "thanks a lot": "thanks",
        "many thanks": "thanks",
        "thank u": "thanks",
        "right now": "",
        "at the moment": "",
        "a lot": "",
        "by any chance": "",
        "in general": "",
        "for me": "",
        # phrasal verbs whose particle carries the meaning
        "turn on": "enable",
        "turned on": "enable",
        "turning on": "enable",
        "switch on": "enable",
        "switched on": "enable",
        "turn off": "disable",
        "turned off": "disable",
        "turning off": "disable",
        "switch off": "disable",
        "switched off": "disable",
        "shut down": "shutdown",
        "can not remember": "forgot",
        "do not remember": "forgot",
        "does not remember": "forgot",
        "log in": "login",
        "log into": "login",
        "logged into": "login",
        "logging into": "login",
        "sign into": "login",
        "signed into": "login",
        "logged in": "login",
        "logging in": "login",
        "sign in": "login",
        "signed in": "login",
        "signing in": "login",
        "sign-in": "login",
        "log-in": "login",
        "log out": "logout",
        "logged out": "logout",
        "sign out": "logout",
        "signed out": "logout",
        "sign up": "register",
        "signed up": "register",
        "sign-up": "register",
        "set up": "setup",
        "roll back": "rollback",
        "rolled back": "rollback",
        "send back": "return",
        "sent back": "return",
        "give back": "return",
        "bring back": "return",
        "money back": "refund",
        "be used": "use",
        "is used": "use",
        "are used": "use",
        "being used": "use",
        "in the box": "included",
        "payment methods": "pay",
        "payment method": "pay",
        "payment options": "pay",
        "ways to pay": "pay",
        "number of items": "length",
        "number of elements": "length",
        "count of items": "length",
        "open and close": "hours",
        "opening hours": "hours",
        "opening times": "hours",
        "business hours": "hours",
        "what time": "when",
        "create an account": "register",
        "open an account": "register",
        "charging brick": "charger",
        "power adapter": "charger",
        "power brick": "charger",
        "wall charger": "charger",
        "remove duplicates": "dedupe",
        "get rid of duplicates": "dedupe",
        "get in touch with": "contact",
        "get in touch": "contact",
        "reach out to": "contact",
        "speak to": "talk",
        "speak with": "talk",
        "chat with": "talk",
        "find out": "check",
        "look up": "check",
        "figure out": "check",
        "pick up": "pickup",
        "picked up": "pickup",
        "pick-up": "pickup",
        "check out": "checkout",
        "in stock": "available",
        "on hand": "available",
        "customer service": "support",
        "customer support": "support",
        "customer care": "support",
        "support team": "support",
        "help desk": "support",
        "helpdesk": "support",
        "real person": "human",
        "live person": "human",
        "live agent": "human",
        "human agent": "human",
        "how long": "duration",
        "how much time": "duration",
        "how many days": "duration",
        "how many hours": "duration",
        "how many weeks": "duration",
        "how many minutes": "duration",
        "up to date": "uptodate",
        "most recent": "latest",
        "price matching": "pricematch",
        "price match": "pricematch",
        "price-match": "pricematch",
        "e-mail": "email",
        "e mail": "email",
        "wi-fi": "wifi",
        "command line": "terminal",
        "command-line": "terminal",
        "virtual environment": "venv",
        "virtualenv": "venv",
        "how-to": "how",
        "need to": "must",
        "needs to": "must",
        "want to": "",
        "wants to": "",
        "would like to": "",
        "like to": "",
        "have to": "must",
        "has to": "must",
        "how big": "size",
        "how large": "size",
        "how heavy": "weight",
        "how much does it weigh": "weight",
        "how fast": "speed",
        "how far": "distance",
        "how tall": "height",
        "how wide": "width",
        "how old": "age",
        "works with": "support",
        "work with": "support",
        "compatible with": "support",
        "do you take": "do you accept",
        "pay with": "accept",
        "pay by": "accept",
        "pay using": "accept",
        "does it take": "",
        "do it take": "",
        "comes with": "contain",
        "come with": "contain",
        "came with": "contain",
        "bundled with": "contain",
        "included with": "contain",
        "have a nice day": "goodbye",
        "have a good day": "goodbye",
        "have a great day": "goodbye",
        "see you later": "goodbye",
        "see you": "goodbye",
        "see ya": "goodbye",
        "take care": "goodbye",
        "talk to you later": "goodbye",
        "good bye": "goodbye",
        "test whether": "check if",
        "test if": "check if",
        "difference between": "compare",
        "differences between": "compare",
    }
)

# Chat shorthand, contractions written without apostrophes, and common abbreviations.
SHORTHAND: Final = _table(
    {
        "u": "you",
        "ya": "you",
        "ur": "your",
        "r": "are",
        "pls": "please",
        "plz": "please",
        "pleas": "please",
        "thx": "thanks",
        "thnx": "thanks",
        "thanx": "thanks",
        "tks": "thanks",
        "ty": "thanks",
        "tysm": "thanks",
        "cheers": "thanks",
        "appreciated": "thanks",
        "b4": "before",
        "w/": "with",
        "w/o": "without",
        "bc": "because",
        "cuz": "because",
        "coz": "because",
        "btw": "",
        "tho": "though",
        "thru": "through",
        "abt": "about",
        "ppl": "people",
        "msg": "message",
        "msgs": "messages",
        "info": "information",
        "acct": "account",
        "pw": "password",
        "pwd": "password",
        "passwd": "password",
        "wk": "week",
        "wks": "weeks",
        "hr": "hour",
        "hrs": "hours",
        "yrs": "years",
        "approx": "about",
        "cmd": "command",
        "cmds": "commands",
        "idk": "",
        "whats": "what is",
        "wheres": "where is",
        "whens": "when is",
        "hows": "how is",
        "whos": "who is",
        "thats": "that is",
        "theres": "there is",
        "im": "i am",
        "ive": "i have",
        "youre": "you are",
        "youve": "you have",
        "dont": "do not",
        "doesnt": "does not",
        "didnt": "did not",
        "cant": "can not",
        "cannot": "can not",
        "couldnt": "could not",
        "wouldnt": "would not",
        "shouldnt": "should not",
        "isnt": "is not",
        "arent": "are not",
        "wasnt": "was not",
        "werent": "were not",
        "hasnt": "has not",
        "havent": "have not",
        "hadnt": "had not",
        "wont": "will not",
        "aint": "is not",
        "gonna": "going to",
        "wanna": "want to",
        "gotta": "have to",
        "hiya": "hello",
        "hi": "hello",
        "hey": "hello",
        "heya": "hello",
        "howdy": "hello",
        "yo": "hello",
        "greetings": "hello",
        "bye": "goodbye",
        "byebye": "goodbye",
        "cya": "goodbye",
        "farewell": "goodbye",
        "ok": "okay",
    }
)

# Contraction endings after an apostrophe.
CONTRACTION_SUFFIXES: Final = _table(
    {"n't": " not", "'re": " are", "'ve": " have", "'ll": " will", "'d": " would", "'m": " am"}
)
IRREGULAR_NEGATIONS: Final = _table(
    {
        "what's": "what is",
        "where's": "where is",
        "when's": "when is",
        "why's": "why is",
        "how's": "how is",
        "who's": "who is",
        "that's": "that is",
        "there's": "there is",
        "here's": "here is",
        "it's": "it is",
        "let's": "let us",
        "can't": "can not",
        "won't": "will not",
        "shan't": "shall not",
        "ain't": "is not",
    }
)

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

# Words that only frame a question. Dropped before comparing content.
STOPWORDS: Final = _words(
    """
    a an the this that these those there here it its it's itself they them their theirs
    i me my mine myself we us our ours you your yours yourself he him his she her hers
    is am are was were be been being do does did doing done have has had having
    can could will would shall should may might must
    what which who whom whose how
    of in on at to for from with by about as into onto upon via per through
    and or but so if then than because while also too very just really actually quite
    any some certain particular such own each every all both either
    please kindly okay well oh um uh hmm
    way ways best recommended right proper correct easiest simplest possible able
    explain tell know wanna like trying try
    someone anyone somebody anybody something anything
    there's what's how's where's who's that's
    usually currently still already ever even again yet
    one ones thing things stuff kind kinds much many so lot
    get got getting gets
    use using uses
    go goes going went gone
    make makes making made
    command commands cmd syntax steps step
    offer offers offered provide provides find information info details detail
    between keyword near around guys folks another existing take takes until
    exactly basically simply
    let lets
    say says said
    mean means
    """
)
# Every-slot words removed from content but still checked where they carry meaning
# (question focus and the small-talk acts).
FOCUS_WORDS: Final = frozenset({"when", "where", "why", "who"})
# Words that may appear on one side only without changing the answer, by class. Two
# different words of a "distinct" class (two brands, hello vs goodbye) still differ.
DROPPABLE_CLASSES: Final = MappingProxyType(
    {
        "smalltalk": frozenset({"hello", "goodbye", "thanks"}),
        "language": frozenset({"python"}),
        "brand": _words(
            """
            apple google samsung sony microsoft nintendo dell hp lenovo lg asus acer amazon
            huawei xiaomi oneplus motorola bose jbl anker logitech razer canon nikon panasonic
            philips toshiba intel amd nvidia
            """
        ),
        "context": _words(
            """
            app application project code program script new available order place placed
            submit submitted convert item items product products
            accept contain forgot
            """
        ),
    }
)
DISTINCT_CLASSES: Final = frozenset({"smalltalk", "language", "brand"})
DROPPABLE: Final = frozenset().union(*DROPPABLE_CLASSES.values())

# Canonical forms of general synonyms (applied per word, after shorthand expansion).
SYNONYMS: Final = _table(
    {
        **dict.fromkeys(["ship", "deliver", "delivery", "shipping", "shipment"], "ship"),
        **dict.fromkeys(["buy", "purchase", "bought", "purchased", "purchases"], "buy"),
        **dict.fromkeys(["price", "cost", "pricing", "costs", "priced"], "price"),
        **dict.fromkeys(["coupon", "promo", "voucher", "promotional"], "coupon"),
        **dict.fromkeys(["swap", "exchange", "replacement"], "exchange"),
        **dict.fromkeys(["remove", "delete", "erase"], "remove"),
        **dict.fromkeys(
            ["create", "generate", "scaffold", "init", "initialize", "write", "implement"],
            "create",
        ),
        **dict.fromkeys(["run", "execute", "launch", "invoke"], "run"),
        **dict.fromkeys(["change", "modify", "edit", "update", "alter"], "change"),
        **dict.fromkeys(["upgrade", "updated"], "change"),
        **dict.fromkeys(["latest", "newest", "recent", "last"], "latest"),
        **dict.fromkeys(["website", "site", "web", "online", "internet"], "online"),
        **dict.fromkeys(["access", "read", "retrieve", "fetch", "obtain"], "read"),
        **dict.fromkeys(["receive", "received", "receiving"], "receive"),
        **dict.fromkeys(["show", "display", "print", "output"], "show"),
        **dict.fromkeys(["every", "each", "all"], "all"),
        **dict.fromkeys(["big", "large", "huge"], "large"),
        **dict.fromkeys(["small", "little", "tiny"], "small"),
        **dict.fromkeys(["fast", "quick", "quickly", "rapid"], "fast"),
        **dict.fromkeys(["dict", "dicts", "dictionary", "dictionaries"], "dict"),
        **dict.fromkeys(["str", "string", "strings", "text"], "string"),
        **dict.fromkeys(["int", "integer", "integers", "ints"], "integer"),
        **dict.fromkeys(["func", "function", "functions", "fn"], "function"),
        **dict.fromkeys(["var", "vars", "variable", "variables"], "variable"),
        **dict.fromkeys(["env", "environment"], "environment"),
        **dict.fromkeys(["config", "configuration", "conf", "settings", "setting"], "config"),
        **dict.fromkeys(["db", "database", "databases", "dbs"], "database"),
        **dict.fromkeys(["repo", "repository"], "repository"),
        **dict.fromkeys(["dir", "directory", "folder", "dirs", "directories"], "directory"),
        **dict.fromkeys(["arg", "args", "argument", "arguments"], "argument"),
        **dict.fromkeys(["param", "params", "parameter", "parameters"], "parameter"),
        **dict.fromkeys(["docs", "documentation", "doc"], "documentation"),
        **dict.fromkeys(["req", "request"], "request"),
        **dict.fromkeys(["resp", "response"], "response"),
        **dict.fromkeys(["auth", "authentication"], "authentication"),
        **dict.fromkeys(["pkg", "package", "lib", "library", "libraries"], "package"),
        **dict.fromkeys(["cli", "terminal"], "terminal"),
        **dict.fromkeys(["phone", "smartphone", "cellphone", "mobile"], "phone"),
        **dict.fromkeys(["tv", "television", "telly"], "tv"),
        **dict.fromkeys(["laptop", "laptops"], "laptop"),
        **dict.fromkeys(["headphone", "headphones"], "headphones"),
        **dict.fromkeys(["human", "person", "agent", "representative", "rep"], "human"),
        **dict.fromkeys(["talk", "speak", "chat", "chatting"], "talk"),
        **dict.fromkeys(["bot", "robot", "chatbot", "ai"], "bot"),
        **dict.fromkeys(["email", "emails"], "email"),
        **dict.fromkeys(["fix", "solve", "resolve", "repair"], "fix"),
        **dict.fromkeys(["issue", "problem", "trouble"], "problem"),
        **dict.fromkeys(["broken", "damaged", "broke"], "broken"),
        **dict.fromkeys(["merge", "combine"], "merge"),
        **dict.fromkeys(["check", "determine", "see"], "check"),
        **dict.fromkeys(["contain", "contains", "exist", "exists", "include"], "contain"),
        **dict.fromkeys(["included", "includes"], "contain"),
        **dict.fromkeys(["custom", "own", "customize", "customise", "customized"], "custom"),
        **dict.fromkeys(["installments", "instalments", "installment", "financing"], "finance"),
        **dict.fromkeys(["thank"], "thanks"),
        **dict.fromkeys(["delivered"], "delivered"),
        **dict.fromkeys(["need", "needs"], "must"),
        **dict.fromkeys(["reach"], "contact"),
        **dict.fromkeys(["basket", "cart"], "cart"),
        **dict.fromkeys(["parcel", "parcels"], "package"),
        **dict.fromkeys(["warranty", "warranties"], "warranty"),
        **dict.fromkeys(["shop", "store"], "store"),
        **dict.fromkeys(["into"], "to"),
        **dict.fromkeys(["turn", "transform", "cast"], "convert"),
        **dict.fromkeys(["deduplicate", "dedup"], "dedupe"),
        **dict.fromkeys(["py"], "python"),
        **dict.fromkeys(["version", "versions", "release", "releases"], "version"),
        **dict.fromkeys(["undo", "revert", "rollback"], "rollback"),
        **dict.fromkeys(
            ["difference", "differences", "different", "differ", "vs", "versus", "compare"],
            "compare",
        ),
        **dict.fromkeys(["refund", "refunded", "reimburse", "reimbursement"], "refund"),
        **dict.fromkeys(["accept", "support", "supports", "compatible"], "accept"),
        **dict.fromkeys(["max", "maximum"], "maximum"),
        **dict.fromkeys(["min", "minimum"], "minimum"),
        **dict.fromkeys(["loyalty", "reward", "rewards"], "reward"),
        **dict.fromkeys(["fee", "fees", "charge", "charges", "charged"], "fee"),
        **dict.fromkeys(["charging"], "charging"),
        **dict.fromkeys(["charger", "chargers"], "charger"),
        **dict.fromkeys(["declare", "define", "add", "writing", "wrote", "written"], "create"),
        **dict.fromkeys(["pass", "send", "sent"], "send"),
        **dict.fromkeys(["wipe", "clear"], "clear"),
        **dict.fromkeys(["cancel", "cancellation"], "cancel"),
        **dict.fromkeys(["track", "tracking"], "track"),
    }
)

# Irregular inflections -> base form (before synonyms).
IRREGULAR: Final = _table(
    {
        "got": "get",
        "gotten": "get",
        "sold": "sell",
        "made": "make",
        "ran": "run",
        "took": "take",
        "taken": "take",
        "gave": "give",
        "given": "give",
        "paid": "pay",
        "brought": "bring",
        "chose": "choose",
        "chosen": "choose",
        "kept": "keep",
        "lost": "lose",
        "saw": "see",
        "seen": "see",
        "told": "tell",
        "thought": "think",
        "began": "begin",
        "begun": "begin",
        "shown": "show",
        "done": "do",
        "children": "child",
        "went": "go",
        "ordered": "bought",
        "knew": "know",
        "known": "know",
        "held": "hold",
        "spent": "spend",
        "wrote": "write",
        "written": "write",
        "ate": "eat",
        "drove": "drive",
        "fell": "fall",
        "stole": "steal",
        "stolen": "steal",
        "hid": "hide",
        "hidden": "hide",
        "led": "lead",
        "lent": "lend",
        "built": "build",
        "caught": "catch",
        "taught": "teach",
        "uses": "use",
        "using": "use",
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
