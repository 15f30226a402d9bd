#!/usr/bin/env python3
"""The multi-agent task suite: generator, prompt rendering and reference answers.

Four task types, each a small pipeline of agents (see bench/tasks/README.md for the file format):
  fact_relay    reporters hold private facts and relay the one the question needs; a lead answers
  aggregation   reporters report numbers or lists; an analyst gives the max, a sum, or the common item
  rag           a reader answers from retrieved documents, some irrelevant, in any order
  long_context  the needed fact lies far back in a long record of unrelated text

Held-out suite (committed in bench/tasks):
    python3 tools/make_tasks.py --corpus build-train/corpus/heldout.txt --out bench/tasks
The training script imports this module and draws fresh tasks with its own seed, rendered by the
same `render` the pipeline runner mirrors, so the model learns exactly the prompts it will see.
Only the standard library is used.
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import tomllib

TYPES = ("fact_relay", "aggregation", "rag", "long_context")
TEST_SEED = 20261122  # training uses other seeds (tools/train_tiny_model.py)
HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES_PATH = os.path.join(HERE, "..", "bench", "tasks", "templates.toml")

AGENT_NAMES = ["Ava", "Ben", "Cleo", "Dan", "Eve", "Finn", "Gia", "Hugo", "Iris", "Jack", "Kira",
               "Leo", "Maya", "Noah", "Olga", "Paul", "Quinn", "Rosa", "Sam", "Tara", "Uma",
               "Victor", "Wes", "Xena", "Yuri", "Zoe", "Alma", "Boris", "Carla", "Dora"]
SYLLABLES = ["ka", "lo", "mi", "ra", "ven", "to", "sel", "dor", "an", "bri", "cu", "fen", "gal",
             "hes", "ir", "jun", "kel", "lum", "mor", "nal", "pem", "qui", "ros", "sta", "tul",
             "und", "vir", "wen", "yas", "zel", "bo", "de", "fa", "gu", "ha", "ji", "ko", "le"]
CITIES = ["Lyon", "Oslo", "Quito", "Lima", "Perth", "Dakar", "Hanoi", "Porto", "Bergen", "Cusco",
          "Tartu", "Malmo", "Graz", "Leeds", "Turin", "Ghent", "Bilbao", "Krakow", "Split", "Riga",
          "Nantes", "Padua", "Tromso", "Aarhus", "Cork", "Basel", "Lille", "Brno", "Gdansk", "Kyoto"]
COLORS = ["red", "blue", "green", "yellow", "purple", "orange", "black", "white", "silver", "gold",
          "brown", "pink", "grey", "teal", "violet", "amber"]
ANIMALS = ["cat", "dog", "parrot", "rabbit", "turtle", "hamster", "goat", "horse", "owl", "frog",
           "lizard", "pony", "ferret", "goose", "snake", "duck"]
ITEMS = ["apple", "pear", "plum", "lemon", "grape", "melon", "cherry", "peach", "mango", "kiwi",
         "hammer", "rope", "lamp", "bucket", "ladder", "candle", "mirror", "basket", "kettle",
         "pencil", "violin", "drum", "flute", "guitar", "anchor", "compass", "helmet", "lantern",
         "saddle", "barrel", "shovel", "whistle", "blanket", "bottle", "button", "carpet"]
KINDS = ["Museum", "Library", "Bridge", "Festival", "Company", "Observatory", "School", "Garden",
         "Theater", "Hospital", "Stadium", "Market"]
FEATURES = ["glass roof", "old clock", "rose garden", "night tours", "free concerts", "tall tower",
            "river view", "stone lions", "painted ceiling", "winter fair", "green doors",
            "copper dome", "long stairs", "rare maps", "silent hall", "open kitchen"]


def make_name(rng):
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3)))).capitalize()


def distinct(rng, draw, count):
    seen = []
    while len(seen) < count:
        value = draw()
        if value not in seen:
            seen.append(value)
    return seen


# ---- facts -------------------------------------------------------------------------------------
ATTRIBUTES = {
    "code": lambda rng: str(rng.randint(1000, 9999)),
    "city": lambda rng: rng.choice(CITIES),
    "color": lambda rng: rng.choice(COLORS),
    "room": lambda rng: str(rng.randint(100, 999)),
    "pet": lambda rng: rng.choice(ANIMALS),
    "age": lambda rng: str(rng.randint(18, 90)),
}
QUESTION_FORMS = ["What is the {attr} of {name}?", "Which {attr} does {name} have?",
                  "Tell me the {attr} of {name}."]


def fact_sentence(fact):
    return f"The {fact['attr']} of {fact['name']} is {fact['value']}."


def draw_facts(rng, count):
    """`count` facts with distinct (name, attribute) pairs; names and attributes recur so that
    the question cannot be answered by matching the name or the attribute alone."""
    names = distinct(rng, lambda: make_name(rng), max(2, count // 2 + 1))
    facts, keys = [], set()
    while len(facts) < count:
        name, attr = rng.choice(names), rng.choice(list(ATTRIBUTES))
        if (name, attr) in keys:
            continue
        keys.add((name, attr))
        facts.append({"name": name, "attr": attr, "value": ATTRIBUTES[attr](rng)})
    return facts


def question_for(rng, fact):
    return rng.choice(QUESTION_FORMS).format(attr=fact["attr"], name=fact["name"])


# ---- corpus text (filler and irrelevant passages) ----------------------------------------------
class TextSource:
    """Paragraphs of real English text, drawn at random."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            raw = f.read()
        paragraphs = [p.strip("\n") for p in re.split(r"\n\s*\n", raw)]
        self.paragraphs = [p for p in paragraphs if 120 <= len(p) <= 1500 and p.isascii()
                           and sum(c.isalpha() for c in p) > 0.6 * len(p)]
        if len(self.paragraphs) < 100:
            raise SystemExit(f"{path}: too little usable text ({len(self.paragraphs)} paragraphs)")

    def passage(self, rng, max_chars=500):
        while True:
            p = rng.choice(self.paragraphs)
            if len(p) <= max_chars:
                return p

    def filler(self, rng, chars):
        out, total = [], 0
        while total < chars:
            p = rng.choice(self.paragraphs)
            out.append(p)
            total += len(p) + 1
        return "\n".join(out)


# ---- task types ---------------------------------------------------------------------------------
def pick_template(rng, task_type, templates):
    return rng.choice([t for t in templates if t.startswith(task_type + ".")])


def gen_fact_relay(rng, templates, text=None, pools=None):
    reporters = rng.randint(2, 4)
    names = rng.sample(AGENT_NAMES, reporters + 1)
    facts = draw_facts(rng, reporters * 2)
    target = rng.choice(facts)
    agents = []
    for i in range(reporters):
        own = facts[2 * i:2 * i + 2]
        agents.append({"name": names[i], "role": "reporter",
                       "notes": "\n".join(fact_sentence(f) for f in own)})
    agents.append({"name": names[-1], "role": "answerer"})
    topology = rng.choice(["chain", "rounds"])
    return {"type": "fact_relay", "template": pick_template(rng, "fact_relay", templates),
            "topology": topology, "rounds": 2 if topology == "rounds" else 1, "agents": agents,
            "input": question_for(rng, target), "answer": target["value"],
            "relay": fact_sentence(target)}


def gen_aggregation(rng, templates, text=None, pools=None):
    reporters = rng.randint(3, 4)
    names = rng.sample(AGENT_NAMES, reporters + 1)
    kind = rng.choice(["max", "sum", "common"])
    if kind == "max":
        values = rng.sample(range(10, 100), reporters)
        notes = [str(v) for v in values]
        question = rng.choice(["Which reported number is the largest?",
                               "What is the largest number in the reports?"])
        answer = str(max(values))
    elif kind == "sum":
        values = [rng.randint(1, 49) for _ in range(reporters)]
        notes = [str(v) for v in values]
        a, b = rng.sample(range(reporters), 2)
        question = f"What is the sum of the numbers from {names[a]} and {names[b]}?"
        answer = str(values[a] + values[b])
    else:
        common = rng.choice(ITEMS)
        others = rng.sample([i for i in ITEMS if i != common], reporters * 2)
        lists = []
        for i in range(reporters):
            items = [common] + others[2 * i:2 * i + 2]
            rng.shuffle(items)
            lists.append(items)
        notes = [", ".join(items) for items in lists]
        question = rng.choice(["Which item is on every list?", "What appears in all the lists?"])
        answer = common
    agents = [{"name": names[i], "role": "reporter", "notes": notes[i]} for i in range(reporters)]
    agents.append({"name": names[-1], "role": "aggregator"})
    return {"type": "aggregation", "kind": kind,
            "template": pick_template(rng, "aggregation", templates), "topology": "rounds",
            "rounds": 1, "agents": agents, "input": question, "answer": answer}


def make_entity_doc(rng):
    entity = f"{make_name(rng)} {rng.choice(KINDS)}"
    fields = {"city": rng.choice(CITIES), "year": str(rng.randint(1801, 2019)),
              "director": f"{make_name(rng)} {make_name(rng)}", "feature": rng.choice(FEATURES)}
    text = (f"The {entity} is in {fields['city']}. It opened in {fields['year']}. "
            f"Its director is {fields['director']}. It is known for its {fields['feature']}.")
    return {"entity": entity, "fields": fields, "text": text}


RAG_QUESTIONS = {"city": "In which city is the {e}?", "year": "In what year did the {e} open?",
                 "director": "Who is the director of the {e}?",
                 "feature": "What is the {e} known for?"}


def gen_rag(rng, templates, text, pools=None):
    """`pools` (held-out suite): fixed document and passage pools, so documents recur across tasks
    at different positions, as a real retriever's do. Without it every document is fresh."""
    count = rng.randint(3, 6)
    irrelevant = rng.randint(0, min(2, count - 1))
    if pools:
        entity_docs = rng.sample(pools["entities"], count - irrelevant)
        passages = rng.sample(pools["passages"], irrelevant)
    else:
        entity_docs = [make_entity_doc(rng) for _ in range(count - irrelevant)]
        passages = [text.passage(rng) for _ in range(irrelevant)]
    target = entity_docs[0]
    field = rng.choice(list(RAG_QUESTIONS))
    documents = [d["text"] for d in entity_docs] + passages
    rng.shuffle(documents)
    return {"type": "rag", "template": pick_template(rng, "rag", templates), "topology": "single",
            "rounds": 1, "agents": [{"name": rng.choice(AGENT_NAMES), "role": "reader"}],
            "input": RAG_QUESTIONS[field].format(e=target["entity"]), "documents": documents,
            "answer": target["fields"][field]}


def gen_long_context(rng, templates, text, pools=None, min_chars=3000, max_chars=5200):
    facts = draw_facts(rng, rng.randint(2, 3))
    target = facts[0]
    body = text.filler(rng, rng.randint(min_chars, max_chars)).split("\n")
    # The needed fact sits in the first fifth of the record; distractor facts anywhere after it.
    body.insert(rng.randint(0, max(1, len(body) // 5)), fact_sentence(target))
    for f in facts[1:]:
        body.insert(rng.randint(len(body) // 3, len(body)), fact_sentence(f))
    body.append(question_for(rng, target))
    names = rng.sample(AGENT_NAMES, 2)
    return {"type": "long_context", "template": pick_template(rng, "long_context", templates),
            "topology": "chain", "rounds": 1,
            "agents": [{"name": names[0], "role": "reader"}, {"name": names[1], "role": "answerer"}],
            "input": "\n".join(body), "answer": target["value"]}


GENERATORS = {"fact_relay": gen_fact_relay, "aggregation": gen_aggregation, "rag": gen_rag,
              "long_context": gen_long_context}


# ---- rendering and reference runs -------------------------------------------------------------
def load_templates(path=TEMPLATES_PATH):
    with open(path, "rb") as f:
        return {t["id"]: t for t in tomllib.load(f)["template"]}


def render(template, agent, task, messages):
    """The agent's prompt as segments [(kind, text)]: kind is "text" for template pieces and the
    agent's private notes, or "input" / "document" / "message" for shared placeholders. Each
    segment is tokenized on its own; the prompt is their concatenation."""
    role = template["roles"][agent["role"]]
    segments = [("text", role["header"].replace("{name}", agent["name"]))]
    if agent.get("notes"):
        segments.append(("text", template["notes"] + agent["notes"] + "\n"))
    segments += [("text", template["input"]), ("input", task["input"] + "\n")]
    for i, doc in enumerate(task.get("documents", [])):
        segments += [("text", template["document"].replace("{index}", str(i + 1))),
                     ("document", doc + "\n")]
    for author, message in messages:
        segments += [("text", template["message"].replace("{name}", author)),
                     ("message", message + "\n")]
    segments.append(("text", role["instruction"] + template["cue"]))
    return segments


def schedule(task):
    """Agent turns in order: (agent index, [indices of the turns whose messages it sees])."""
    agents = task["agents"]
    turns = []
    if task["topology"] == "single":
        return [(0, [])]
    if task["topology"] == "chain":
        return [(i, list(range(i))) for i in range(len(agents))]
    peers = len(agents) - 1
    previous = []
    for _ in range(task["rounds"]):
        current = []
        for i in range(peers):
            turns.append((i, [t for t in previous if turns[t][0] != i]))
            current.append(len(turns) - 1)
        previous = current
    turns.append((peers, previous))
    return turns


def reference_output(task, agent, seen_messages):
    """What a perfect agent replies: the training target, and the scorer's expectation."""
    if task["type"] == "fact_relay" and agent["role"] == "reporter":
        if task["relay"] in agent["notes"].split("\n") or task["relay"] in seen_messages:
            return task["relay"]
        return "nothing"
    if task["type"] == "aggregation" and agent["role"] == "reporter":
        return agent["notes"]
    return task["answer"]


def reference_runs(task, templates):
    """Every agent turn of the task with the perfect agent's reply: [(segments, reply)]."""
    template = templates[task["template"]]
    turns = schedule(task)
    replies, runs = [], []
    for agent_index, seen in turns:
        agent = task["agents"][agent_index]
        messages = [(task["agents"][turns[t][0]]["name"], replies[t]) for t in seen]
        reply = reference_output(task, agent, [m for _, m in messages])
        runs.append((render(template, agent, task, messages), reply))
        replies.append(reply)
    return runs


def normalize_answer(text):
    return text.strip().rstrip(".").strip().lower()


# ---- held-out suite -----------------------------------------------------------------------------
def token_counts(prompts, spm_model):
    """Token count of each prompt with the shipped tokenizer (spm_encode, one line at a time)."""
    lines, owners = [], []
    for i, p in enumerate(prompts):
        for line in p.split("\n"):
            lines.append(line)
            owners.append(i)
    out = subprocess.run(["spm_encode", f"--model={spm_model}", "--output_format=id"],
                         input="\n".join(lines) + "\n", capture_output=True, text=True, check=True)
    counts = [0] * len(prompts)
    for owner, ids in zip(owners, out.stdout.split("\n")):
        counts[owner] += len(ids.split()) + 1  # + the newline's byte token
    return counts


def write_render_fixture(task_dir, out, per_type=2):
    """Every turn of the first tasks of each type, rendered with the reference replies: what the
    C++ renderer must reproduce (tests/pipeline)."""
    templates = load_templates()
    with open(out, "w") as f:
        for task_type in TYPES:
            with open(os.path.join(task_dir, f"{task_type}.jsonl")) as tasks:
                for line in tasks.readlines()[:per_type]:
                    task = json.loads(line)
                    turns = schedule(task)
                    replies = [reply for _, reply in reference_runs(task, templates)]
                    for i, (segments, reply) in enumerate(reference_runs(task, templates)):
                        seen = [[task["agents"][turns[t][0]]["name"], replies[t]] for t in turns[i][1]]
                        f.write(json.dumps({"id": task["id"], "turn": i, "agent": turns[i][0],
                                            "messages": seen, "segments": segments}) + "\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--render-fixture", help="only write the rendering fixture of --out's tasks here")
    parser.add_argument("--corpus", help="held-out English text (filler, passages)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--per-type", type=int, default=250)
    parser.add_argument("--seed", type=int, default=TEST_SEED)
    parser.add_argument("--tokenizer", help="tokenizer.model: drop tasks over --max-tokens")
    parser.add_argument("--max-tokens", type=int, default=1900)
    args = parser.parse_args()
    if args.render_fixture:
        return write_render_fixture(args.out, args.render_fixture)
    if not args.corpus:
        parser.error("--corpus is required")

    templates = load_templates()
    text = TextSource(args.corpus)
    rng = random.Random(args.seed)
    pools = {"entities": [make_entity_doc(rng) for _ in range(300)],
             "passages": [text.passage(rng) for _ in range(120)]}
    os.makedirs(args.out, exist_ok=True)
    for task_type in TYPES:
        tasks = []
        while len(tasks) < args.per_type:
            batch = [GENERATORS[task_type](rng, templates, text, pools)
                     for _ in range(args.per_type - len(tasks))]
            if args.tokenizer:
                longest = [max(("".join(s for _, s in segs) + reply + "\n"
                                for segs, reply in reference_runs(t, templates)), key=len)
                           for t in batch]
                counts = token_counts(longest, args.tokenizer)
                batch = [t for t, n in zip(batch, counts) if n <= args.max_tokens]
            tasks += batch
        with open(os.path.join(args.out, f"{task_type}.jsonl"), "w") as f:
            for i, task in enumerate(tasks):
                row = {"id": f"{task_type}-{i:04d}", **task, "scorer": "exact"}
                f.write(json.dumps(row, ensure_ascii=True) + "\n")
        print(f"{task_type}: {len(tasks)} tasks", file=sys.stderr)


if __name__ == "__main__":
    main()
