// Pipelines from a TOML file (examples/*.toml; the format is in the README): the agents (role,
// template, model or worker, sampling), the topology (single, chain, rounds, dag), the inputs (a
// task file in the bench/tasks format) and the scoring. Tasks give a pipeline its inputs: the
// user input, documents, each agent's name and private notes, the answer; the pipeline decides
// who speaks when, with which prompt and settings. Relative paths are relative to the file.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agents/pipeline/task.h"
#include "agents/runtime/generate.h"

namespace kvcomm::pipeline {

struct PipelineAgentSpec {
  std::string id;           // unique in the pipeline
  std::string role;         // empty: the task's
  std::string template_id;  // empty: the task's
  std::string model;        // a key of PipelineSpec::models (in-process agents)
  std::string worker;       // a kvcomm-agent endpoint; the agent runs on that worker's model
  runtime::SamplingOptions sampling;
  int64_t max_reply_tokens = 24;
  std::vector<int> sees;  // dag: indices of the agents it reads
};

struct PipelineSpec {
  std::string path;
  std::string name;
  std::string description;
  std::string templates;           // prompt templates file
  std::vector<std::string> tasks;  // task files
  int64_t limit = 0;               // first N tasks of each file; 0 = all
  std::optional<bool> scored;      // scoring = "exact" | "none"; unset: each task's own
  std::optional<Topology> topology;
  int rounds = 0;                             // rounds topology; 0 = each task's own
  bool bases_after_reply = false;             // kvcomm: ReuseOptions::bases_after_reply
  bool true_context_anchors = false;          // kvcomm: ReuseOptions::true_context_anchors
  std::map<std::string, std::string> models;  // id -> model directory
  std::vector<PipelineAgentSpec> agents;
};

// Reads and checks a pipeline file: unknown keys, missing or ill-typed values, unknown models,
// agents or topologies, cycles are refused with the file and the field named.
Result<PipelineSpec> LoadPipeline(const std::string& path);

// The task as this pipeline runs it: its agents take the pipeline's roles, templates and
// edges, its topology and scoring the pipeline's. The task must have as many agents.
Result<Task> BindTask(const PipelineSpec& spec, Task task, const TemplateSet& templates);

}  // namespace kvcomm::pipeline
