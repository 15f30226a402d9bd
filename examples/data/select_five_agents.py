#!/usr/bin/env python3
"""Writes data/five_agents.jsonl: the held-out fact_relay tasks with five agents that talk in
rounds (four reporters for two rounds, then the lead), the inputs of five_agents.toml.
Run from the repository root: python3 examples/data/select_five_agents.py"""
import json

with open("bench/tasks/fact_relay.jsonl") as src, open("examples/data/five_agents.jsonl", "w") as out:
    for line in src:
        task = json.loads(line)
        if task["topology"] == "rounds" and len(task["agents"]) == 5:
            out.write(line)
