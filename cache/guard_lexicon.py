"""Vocabulary the semantic guard normalises questions with: phrases, chat shorthand,
contractions, stopwords, synonyms, irregular forms and the words that may be left out.

General vocabulary only, not phrases from any test set; immutable, so module-level is fine.
The cues that carry an answer (numbers, negation, opposites, names) are in guard_cues.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final


def _table(pairs: dict[str, str]) -> MappingProxyType[str, str]:
    return MappingProxyType(pairs)


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


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
