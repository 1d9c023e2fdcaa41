"""Real-data worlds: HotpotQA (distractor setting) and GSM8K behind the same episode interface.

What: `load_hotpotqa()` / `load_gsm8k()` return a `datasets.Dataset` (from the Hugging Face Hub,
or from `path=`, a local .json / .jsonl / .parquet file or a `save_to_disk` folder), and
`make_real_env("hotpotqa" | "gsm8k", ...)` wraps it in an `Env` with the tools of the
procedural worlds: `search(query)` over the question's own 10 paragraphs (bm25s, top 2), or
`calculator(expression)`. Success is SQuAD-normalised exact match (HotpotQA) or an exact
numeric match (GSM8K).
Why: the GPU path evaluates the same agent on real questions; the procedural worlds stay the
offline default, and these adapters are tested offline on fixtures in the real schemas.
How: `env = make_real_env("gsm8k", path="test.jsonl", n=50)`, then `env.reset(0)` and
`env.step(Action.call("calculator", expression="48/2"))`. Without a network and without a
cached copy the loaders raise `DataUnavailable`, which says how to fix it.

HotpotQA rows may be in the Hub schema (`id`, `context: {"title": [...], "sentences": [[...]]}`,
`supporting_facts: {"title": [...], "sent_id": [...]}`) or the official JSON schema (`_id`,
`context: [[title, [sentences]], ...]`, `supporting_facts: [[title, sent_id], ...]`).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import bm25s
import datasets
from datasets.exceptions import DatasetsError

from .base import Env, Observation, Task, tool_schema
from .math import CALCULATOR_TOOL, MathEnv
from .search import TOP_K, query_problem

REAL_WORLDS = ("hotpotqa", "gsm8k")
HUB = {"hotpotqa": ("hotpotqa/hotpot_qa", "distractor", "validation"),
       "gsm8k": ("openai/gsm8k", "main", "test")}  # repo, config, default split
# what `load_dataset` raises without a network: ConnectionError (OfflineModeIsEnabled),
# LocalEntryNotFoundError, HfHubHTTPError and DatasetNotFoundError are all OSErrors
HUB_ERRORS = (ConnectionError, OSError, DatasetsError)

HOTPOT_SEARCH_TOOL = tool_schema(
    "search",
    "Search the Wikipedia paragraphs that come with this question. Returns the top passages.",
    query="a few keywords, usually a title or a name, e.g. 'Scott Derrickson'",
)
HOTPOT_PROMPT = (
    "You answer questions from Wikipedia paragraphs. Use the search tool to look facts up; "
    "when you know the answer, reply with <answer>...</answer> holding a short answer."
)
GSM8K_PROMPT = (
    "You solve grade-school math word problems. Use the calculator tool for the arithmetic; "
    "when you know the result, reply with <answer>...</answer> holding just the number."
)


class DataUnavailable(RuntimeError):
    """A real data set could not be loaded (no network and no cached copy)."""


# ---------------------------------------------------------------- loading

def load_hotpotqa(split: str = "validation", *, path=None, n: int | None = None) -> datasets.Dataset:
    """HotpotQA, distractor setting (Hub splits: train, validation)."""
    return _load("hotpotqa", split, path, n)


def load_gsm8k(split: str = "test", *, path=None, n: int | None = None) -> datasets.Dataset:
    """GSM8K, main config (Hub splits: train, test)."""
    return _load("gsm8k", split, path, n)


def _load(name: str, split: str, path, n: int | None) -> datasets.Dataset:
    repo, config, _ = HUB[name]
    if path is not None:
        ds = _read_local(Path(path), split)
    else:
        try:
            ds = datasets.load_dataset(repo, config, split=split)
        except HUB_ERRORS as err:
            cause = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}" if str(err) else type(err).__name__
            raise DataUnavailable(
                f"{repo} ({config}, split {split!r}) is not reachable offline and not cached ({cause}); "
                f"pass path= a local copy (a JSON lines file in the official schema), "
                f"or run once online so it is cached.") from err
    return ds if n is None else ds.select(range(min(n, len(ds))))


def _read_local(path: Path, split: str) -> datasets.Dataset:
    if not path.exists():
        raise FileNotFoundError(f"No data at {path}; pass path= a .jsonl, .json or .parquet file or a saved folder.")
    if path.is_dir():
        ds = datasets.load_from_disk(str(path))
        return ds[split] if isinstance(ds, datasets.DatasetDict) else ds
    if path.suffix in (".json", ".jsonl"):
        return datasets.Dataset.from_json(str(path))
    if path.suffix == ".parquet":
        return datasets.Dataset.from_parquet(str(path))
    raise ValueError(f"Unsupported data file {path.name!r}; use .jsonl, .json, .parquet or a save_to_disk folder.")


def make_real_env(name: str, *, path=None, split: str | None = None, n: int | None = None) -> Env:
    """An episode runner over the first `n` questions (all by default) of a real data set."""
    if name not in REAL_WORLDS:
        raise ValueError(f"Unknown real world {name!r}; choose one of: {', '.join(REAL_WORLDS)}.")
    split = split or HUB[name][2]
    if name == "hotpotqa":
        return HotpotQAEnv(seed=0, split=split, tasks=hotpotqa_tasks(load_hotpotqa(split, path=path, n=n), split))
    return GSM8KEnv(seed=0, split=split, tasks=gsm8k_tasks(load_gsm8k(split, path=path, n=n), split))


# ---------------------------------------------------------------- HotpotQA

def _pairs(field) -> list[tuple]:
    """[(title, value), ...] from the Hub's dict of lists or the official list of pairs."""
    if isinstance(field, dict):
        return list(zip(field["title"], field["sentences"] if "sentences" in field else field["sent_id"]))
    return [tuple(pair) for pair in field]


def hotpotqa_task(row: dict, split: str) -> Task:
    """One question; its paragraphs travel in the plan, so any env can rebuild its index."""
    context = [[title, "".join(sentences).strip()] for title, sentences in _pairs(row["context"])]
    facts = [[title, int(sent_id)] for title, sent_id in _pairs(row["supporting_facts"])]
    qid = row.get("id") or row.get("_id")
    return Task(task_id=f"hotpotqa-{split}-{qid}", world="hotpotqa", split=split,
                question=row["question"], answer=row["answer"], hops=2,
                plan={"id": qid, "type": row.get("type"), "level": row.get("level"),
                      "supporting_titles": list(dict.fromkeys(t for t, _ in facts)),
                      "supporting_facts": facts, "context": context})


def hotpotqa_tasks(ds: datasets.Dataset, split: str) -> list[Task]:
    return [hotpotqa_task(row, split) for row in ds]


class _ParagraphIndex:
    """bm25s over one question's paragraphs (title and text)."""

    def __init__(self, paragraphs: tuple[tuple[str, str], ...]):
        self.paragraphs = paragraphs
        self.retriever = bm25s.BM25()
        self.retriever.index(bm25s.tokenize([f"{t}. {x}" for t, x in paragraphs], stopwords="en",
                                            show_progress=False), show_progress=False)

    def search(self, query: str, k: int = TOP_K) -> list[tuple[str, str]]:
        tokens = bm25s.tokenize([query], stopwords="en", show_progress=False)
        if not tokens.ids[0]:
            return []
        ids, scores = self.retriever.retrieve(tokens, k=min(k, len(self.paragraphs)), show_progress=False, n_threads=1)
        return [self.paragraphs[i] for i, s in zip(ids[0], scores[0]) if s > 0]


@functools.lru_cache(maxsize=1024)
def _paragraph_index(paragraphs: tuple[tuple[str, str], ...]) -> _ParagraphIndex:
    return _ParagraphIndex(paragraphs)


class HotpotQAEnv(Env):
    name = "hotpotqa"
    tools = [HOTPOT_SEARCH_TOOL]
    system_prompt = HOTPOT_PROMPT

    def _tool(self, name: str, arguments: dict) -> Observation:
        query = arguments.get("query")
        problem = query_problem(query, example="a title or a name")
        if problem:
            return problem
        index = _paragraph_index(tuple(map(tuple, self.task.plan["context"])))
        hits = index.search(query.strip())
        if not hits:
            return Observation(f"No passages match {query.strip()!r}. Try a title or a name.")
        text = "\n".join(f"[{i + 1}] {title}: {body}" for i, (title, body) in enumerate(hits))
        return Observation(text, facts=tuple(title for title, _ in hits))


# ---------------------------------------------------------------- GSM8K

def gsm8k_answer(solution: str) -> str:
    """The final answer of a GSM8K solution: '#### 1,234' -> '1234'."""
    match = re.search(r"####\s*(.+?)\s*$", solution)
    number = match.group(1).replace(",", "") if match else ""
    if not re.fullmatch(r"-?\d+(\.\d+)?", number):
        raise ValueError(f"No '#### <number>' line at the end of the GSM8K solution: {solution[-80:]!r}")
    return number


def calculator_calls(solution: str) -> list[tuple[str, str]]:
    """The annotated calculator calls of a solution: '<<48/2=24>>' -> ('48/2', '24')."""
    return [(expr, result) for expr, _, result in
            (m.rpartition("=") for m in re.findall(r"<<([^<>]*)>>", solution)) if expr]


def gsm8k_tasks(ds: datasets.Dataset, split: str) -> list[Task]:
    tasks = []
    for i, row in enumerate(ds):
        calls = calculator_calls(row["answer"])
        tasks.append(Task(task_id=f"gsm8k-{split}-{i:05d}", world="gsm8k", split=split,
                          question=row["question"], answer=gsm8k_answer(row["answer"]), hops=len(calls),
                          plan={"calls": [list(c) for c in calls], "solution": row["answer"]}))
    return tasks


class GSM8KEnv(MathEnv):
    """The math world's calculator and exact numeric match, over GSM8K problems."""

    name = "gsm8k"
    tools = [CALCULATOR_TOOL]
    system_prompt = GSM8K_PROMPT
