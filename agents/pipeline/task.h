// The multi-agent task suite (bench/tasks): prompt templates, tasks and their schedule of agent
// turns. The format is described in bench/tasks/README.md; tools/make_tasks.py generates it and
// renders training prompts by the same rules as prompt.h, so the shipped model is trained on
// exactly the prompts the pipeline runner sends.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/status.h"

namespace kvcomm::pipeline {

struct RoleText {
  std::string header;  // {name} is replaced by the agent's name
  std::string instruction;
};

struct PromptTemplate {
  std::string id;
  std::string notes;     // label before an agent's private notes
  std::string input;     // label before the user input
  std::string document;  // label before each document ({index} = 1, 2, ...)
  std::string message;   // label before each message ({name} = its author)
  std::string cue;       // last line; the agent replies after it
  std::map<std::string, RoleText> roles;
};

using TemplateSet = std::map<std::string, PromptTemplate>;

// Reads a templates.toml; every piece must be present and end with a newline, so that every
// placeholder is whole lines (and tokenizes the same wherever it is placed).
Result<TemplateSet> LoadTemplates(const std::string& path);

enum class Topology { kSingle, kChain, kRounds, kDag };

struct AgentSpec {
  std::string name;
  std::string role;
  std::string notes;  // private; may be empty
  // Set by a pipeline file (pipeline_spec.h); the task's own template when empty.
  std::string template_id;
  std::vector<int> sees;  // dag: the agents whose messages this one reads
};

struct Task {
  std::string id;
  std::string type;         // fact_relay, aggregation, rag, long_context
  std::string template_id;  // of every agent without its own
  Topology topology = Topology::kSingle;
  int rounds = 1;
  std::vector<AgentSpec> agents;
  std::string input;
  std::vector<std::string> documents;
  std::string answer;
  bool scored = true;  // false: the pipeline has no right answer to compare with
};

// One JSON line of a task file; `templates` checks that the template and every role exist.
Result<Task> ParseTask(const std::string& json_line, const TemplateSet& templates);
// A whole JSON-lines file (blank lines skipped); at most `limit` tasks when limit > 0. Errors
// name the file and line.
Result<std::vector<Task>> LoadTasks(const std::string& path, const TemplateSet& templates,
                                    int64_t limit = 0);

// One agent turn: which agent speaks and the earlier turns whose messages it sees, in order.
struct Turn {
  int agent = 0;
  std::vector<int> sees;
};
// single: one turn. chain: agent k sees agents 0..k-1. rounds: the peers (all agents but the
// last) speak `rounds` times, each seeing the other peers' previous-round messages; then the
// last agent sees the last round. dag: each agent speaks once, after the agents it sees (the
// earliest listed ready agent first; the last agent, whom no one sees, answers).
std::vector<Turn> Schedule(const Task& task);

// Exact match after trimming whitespace and a trailing period, case-insensitive; never for an
// unscored task.
std::string NormalizeAnswer(std::string_view text);
bool IsCorrect(const Task& task, std::string_view reply);

}  // namespace kvcomm::pipeline
