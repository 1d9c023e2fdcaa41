"""The search world: fictional people, organisations and cities behind a real BM25 retriever.

What: a seeded generator of entities and relations, one short document per entity, a bm25s
index, and 1-, 2- and 3-hop questions whose answers are read out of retrieved passages.
Why: the paper's search agent needs a world where the future is checkable (did the predicted
bridge entity really turn up?), where some facts are common and some rare (entity popularity),
and where held-out questions are disjoint from training by construction.
How: `make_env("search", seed=0, split="train")`, then `env.reset(0)` and
`env.step(Action.call("search", query="Pozan Zokesshi"))`.

Splits (by a stable hash of (start entity, relation path), so they never overlap):
train / rl / eval hold 1- and 2-hop questions over the "seen" entities; eval holds new
compositions of facts training has seen. ood holds questions about entities that never appear
in any other split (their documents are indexed only in the ood world) and 3-hop chains.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import bm25s

from .base import Env, Observation, Task, rng_for, stable_hash, tool_schema

TOP_K = 2  # passages per search: short observations keep episodes inside a small model's context
MAX_QUERY_CHARS = 200

PROFESSIONS = ["chemist", "sculptor", "pilot", "surgeon", "architect", "botanist", "poet",
               "engineer", "historian", "violinist", "cartographer", "astronomer"]
INDUSTRIES = ["shipping", "textiles", "robotics", "publishing", "mining", "insurance",
              "pharmaceuticals", "aviation", "brewing", "software"]
REGIONS = ["Thalor", "Ebrind", "Suvanne", "Korrath", "Melquin", "Dovrel", "Issara", "Pellund"]
ORG_SUFFIXES = ["Works", "Institute", "Holdings", "Foundry", "Guild", "Labs", "Company", "Union"]
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr",
           "kr", "tr", "st", "sh", "pr", "gr"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "o", "ai", "ei"]
_CODAS = ["", "", "", "n", "r", "s", "l", "sk", "nd"]

# relation -> (subject type, object type or None for a literal attribute, phrase for analyses)
RELATIONS = {
    "born_in": ("person", "city", "the city where {} was born"),
    "works_for": ("person", "org", "the organisation {} works for"),
    "profession": ("person", None, "the profession of {}"),
    "birth_year": ("person", None, "the year {} was born"),
    "headquartered_in": ("org", "city", "the city where {} is headquartered"),
    "founded_by": ("org", "person", "the founder of {}"),
    "industry": ("org", None, "the industry of {}"),
    "founded_year": ("org", None, "the year {} was founded"),
    "region": ("city", None, "the region {} lies in"),
    "river": ("city", None, "the river through {}"),
}

# relation path -> question phrasings ({} is the start entity)
QUESTIONS = {
    ("born_in",): ["Where was {} born?", "In which city was {} born?"],
    ("works_for",): ["Which organisation does {} work for?", "Who employs {}?"],
    ("profession",): ["What is the profession of {}?", "What does {} do for a living?"],
    ("birth_year",): ["In which year was {} born?", "When was {} born?"],
    ("headquartered_in",): ["In which city is {} headquartered?", "Where is {} based?"],
    ("founded_by",): ["Who founded {}?", "Who is the founder of {}?"],
    ("industry",): ["What industry is {} in?", "In which industry does {} operate?"],
    ("founded_year",): ["In which year was {} founded?", "When was {} founded?"],
    ("region",): ["In which region is {}?", "Which region is {} part of?"],
    ("river",): ["Which river flows through {}?", "What river runs through {}?"],
    ("works_for", "headquartered_in"): ["In which city is the organisation that {} works for headquartered?",
                                        "Where is the employer of {} based?"],
    ("works_for", "founded_by"): ["Who founded the organisation that {} works for?",
                                  "Who is the founder of {}'s employer?"],
    ("works_for", "industry"): ["What industry is the employer of {} in?",
                                "In which industry does the organisation {} works for operate?"],
    ("works_for", "founded_year"): ["In which year was the organisation that {} works for founded?",
                                    "When was {}'s employer founded?"],
    ("born_in", "region"): ["In which region is the city where {} was born?",
                            "Which region was {} born in?"],
    ("born_in", "river"): ["Which river flows through the city where {} was born?",
                           "What river runs through {}'s birthplace?"],
    ("founded_by", "born_in"): ["Where was the founder of {} born?",
                                "In which city was the person who founded {} born?"],
    ("founded_by", "profession"): ["What is the profession of the founder of {}?",
                                   "What does the founder of {} do for a living?"],
    ("founded_by", "birth_year"): ["In which year was the founder of {} born?",
                                   "When was the person who founded {} born?"],
    ("headquartered_in", "region"): ["In which region is {} headquartered?",
                                     "Which region is the home city of {} in?"],
    ("headquartered_in", "river"): ["Which river flows through the city where {} is headquartered?",
                                    "What river runs through the home city of {}?"],
    # 3-hop chains: out of distribution only
    ("works_for", "founded_by", "born_in"): ["Where was the founder of the organisation that {} works for born?"],
    ("works_for", "headquartered_in", "region"): ["In which region is the organisation that {} works for headquartered?"],
    ("works_for", "founded_by", "profession"): ["What is the profession of the founder of {}'s employer?"],
    ("founded_by", "born_in", "region"): ["In which region was the founder of {} born?"],
    ("founded_by", "works_for", "headquartered_in"): ["Where is the current employer of the founder of {} based?"],
}
SPLIT_SHARES = {"train": 0.55, "rl": 0.15, "eval": 0.30}  # of the 1-2 hop questions on seen entities

SEARCH_TOOL = tool_schema(
    "search",
    "Search the encyclopedia of this world. Returns the top passages for the query.",
    query="a few keywords, usually an entity name, e.g. 'Pozan Zokesshi'",
)
SYSTEM_PROMPT = (
    "You answer questions about a fictional world. Use the search tool to look facts up; "
    "when you know the answer, reply with <answer>...</answer>."
)


@dataclass(frozen=True)
class Entity:
    name: str
    kind: str  # person, org or city
    facts: tuple  # ((relation, value), ...)
    popularity: float  # 1.0 for the most popular entity of its kind, falling off like Zipf
    seen: bool = True  # False: an out-of-distribution entity, indexed only in the ood world

    def fact(self, relation: str) -> str | None:
        return dict(self.facts).get(relation)

    def document(self) -> str:
        f, n = dict(self.facts), self.name
        if self.kind == "person":
            return (f"{n} is {_a(f['profession'])} born in {f['birth_year']} in {f['born_in']}. "
                    f"{n} works for {f['works_for']}.")
        if self.kind == "org":
            return (f"{n} is {_a(f['industry'])} organisation founded in {f['founded_year']} by "
                    f"{f['founded_by']}. {n} is headquartered in {f['headquartered_in']}.")
        return f"{n} is a city in the {f['region']} region. The {f['river']} river flows through {n}."


def _a(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


class World:
    """Entities, documents and a BM25 index over them. Built once per (seed, size) and cached."""

    def __init__(self, *, seed: int, n_people: int = 160, n_ood_people: int = 40,
                 n_orgs: int = 40, n_cities: int = 30, top_k: int = TOP_K):
        rng = rng_for("search-world", seed)
        names = _unique_names(rng, n_people + n_ood_people, n_orgs, n_cities)
        people_names, org_names, city_names, rivers = names
        seen_people = people_names[:n_people]
        self.top_k = top_k
        self.entities: dict[str, Entity] = {}
        cities = [(c, (("region", rng.choice(REGIONS)), ("river", rivers[i % len(rivers)])))
                  for i, c in enumerate(city_names)]
        for i, (c, facts) in enumerate(cities):
            self._add(c, "city", facts, _zipf(i))
        founders = rng.sample(seen_people, n_orgs)  # only seen people found organisations
        for i, o in enumerate(org_names):
            facts = (("headquartered_in", rng.choice(city_names)), ("founded_by", founders[i]),
                     ("industry", rng.choice(INDUSTRIES)), ("founded_year", str(rng.randint(1850, 2015))))
            self._add(o, "org", facts, _zipf(i))
        for i, p in enumerate(people_names):
            facts = (("born_in", rng.choice(city_names)), ("works_for", rng.choice(org_names)),
                     ("profession", rng.choice(PROFESSIONS)), ("birth_year", str(rng.randint(1930, 2004))))
            seen = i < n_people
            self._add(p, "person", facts, _zipf(i) if seen else 0.0, seen=seen)
        # popularity follows generation order, and names are random, so rank is unrelated to name
        self.names = sorted(self.entities)
        self._index = {}

    def _add(self, name, kind, facts, popularity, seen=True):
        self.entities[name] = Entity(name, kind, tuple(facts), popularity, seen)

    def index(self, include_ood: bool) -> "_Index":
        if include_ood not in self._index:
            docs = [self.entities[n] for n in self.names if include_ood or self.entities[n].seen]
            self._index[include_ood] = _Index(docs, self.top_k)
        return self._index[include_ood]

    def follow(self, start: str, path: tuple) -> list[str]:
        """The chain of values start -> r1 -> r2 ... (the last one is the answer)."""
        chain = [start]
        for rel in path:
            chain.append(self.entities[chain[-1]].fact(rel))
        return chain


class _Index:
    """bm25s over entity documents, with a query cache (worlds are static, queries repeat)."""

    def __init__(self, docs: list[Entity], top_k: int):
        self.docs, self.top_k = docs, top_k
        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize([f"{d.name}. {d.document()}" for d in docs],
                                            stopwords="en", show_progress=False), show_progress=False)

    @functools.lru_cache(maxsize=65536)
    def search(self, query: str) -> tuple[Entity, ...]:
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.ids[0]:
            return ()
        k = min(self.top_k, len(self.docs))
        ids, scores = self.retriever.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return tuple(self.docs[i] for i, s in zip(ids[0], scores[0]) if s > 0)


class SearchEnv(Env):
    name = "search"
    tools = [SEARCH_TOOL]
    system_prompt = SYSTEM_PROMPT

    def __init__(self, *, seed: int, split: str, world: World, tasks: list[Task]):
        super().__init__(seed=seed, split=split, tasks=tasks)
        self.world = world
        self.index = world.index(include_ood=split == "ood")

    def _tool(self, name: str, arguments: dict) -> Observation:
        query = arguments.get("query")
        problem = query_problem(query, example="an entity name")
        if problem:
            return problem
        hits = self.index.search(query.strip())
        if not hits:
            return Observation(f"No passages match {query.strip()!r}. Try an entity name.")
        text = "\n".join(f"[{i + 1}] {e.name}: {e.document()}" for i, e in enumerate(hits))
        facts = tuple((e.name, rel, val) for e in hits for rel, val in e.facts)
        return Observation(text, facts=facts)


def query_problem(query, *, example: str) -> Observation | None:
    """An error observation for an empty or over-long query, else None."""
    if not isinstance(query, str) or not query.strip():
        return Observation(f"Error: empty query. Search for a few keywords, e.g. {example}.", error=True)
    if len(query) > MAX_QUERY_CHARS:
        return Observation(f"Error: query too long ({len(query)} characters; the limit is "
                           f"{MAX_QUERY_CHARS}). Search for a few keywords.", error=True)
    return None


@functools.lru_cache(maxsize=8)
def build_world(seed: int) -> World:
    return World(seed=seed)


def make_search_env(*, seed: int = 0, split: str = "train") -> SearchEnv:
    world = build_world(seed)
    return SearchEnv(seed=seed, split=split, world=world, tasks=search_tasks(world, seed, split))


def split_of(start: str, path: tuple, seed: int) -> str:
    """Which of train / rl / eval a 1-2 hop question over seen entities belongs to."""
    u = stable_hash("search-split", seed, start, path) / 2**64
    edge = 0.0
    for split, share in SPLIT_SHARES.items():
        edge += share
        if u < edge:
            return split
    return "eval"


def search_tasks(world: World, seed: int, split: str) -> list[Task]:
    """All questions of one split, in a fixed order."""
    tasks = []
    for name in world.names:
        ent = world.entities[name]
        for path, phrasings in QUESTIONS.items():
            if RELATIONS[path[0]][0] != ent.kind:
                continue
            if split == "ood":
                keep = len(path) == 3 or (not ent.seen and len(path) <= 2)
            else:
                keep = ent.seen and len(path) <= 2 and split_of(name, path, seed) == split
            if not keep:
                continue
            chain = world.follow(name, path)
            phrasing = phrasings[stable_hash(seed, name, path) % len(phrasings)]
            tasks.append(Task(
                task_id=f"search-{seed}-{split}-{len(tasks):05d}", world="search", split=split,
                question=phrasing.format(name), answer=chain[-1], hops=len(path),
                plan={"start": name, "path": list(path), "chain": chain,
                      "popularity": ent.popularity}))
    return tasks


def _zipf(rank: int) -> float:
    """Popularity of the entity of this rank: 1.0 for the first, falling off like Zipf."""
    return round(1.0 / (1 + rank) ** 0.8, 4)


def _unique_names(rng, n_people: int, n_orgs: int, n_cities: int):
    used: set[str] = set()

    def word(syllables: int) -> str:
        while True:
            w = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                        for _ in range(syllables)).capitalize()
            if w not in used and 4 <= len(w) <= 9:
                used.add(w)
                return w

    # a small pool of first names is shared, so a first name alone retrieves several people
    firsts = [word(2) for _ in range(max(8, n_people // 4))]
    people = [f"{rng.choice(firsts)} {word(rng.choice([2, 2, 3]))}" for _ in range(n_people)]
    orgs = [f"{word(2)} {rng.choice(ORG_SUFFIXES)}" for _ in range(n_orgs)]
    cities = [word(rng.choice([2, 3])) for _ in range(n_cities)]
    rivers = [word(2) for _ in range(20)]
    return people, orgs, cities, rivers


def all_questions(world: World) -> list[tuple[str, tuple]]:
    """Every (start entity, relation path) the world can ask, seen or not (used by tests)."""
    return [(n, p) for n in world.names for p in QUESTIONS
            if RELATIONS[p[0]][0] == world.entities[n].kind]

