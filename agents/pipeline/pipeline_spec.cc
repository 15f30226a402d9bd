#include "agents/pipeline/pipeline_spec.h"

#include <algorithm>
#include <filesystem>
#include <set>
#include <type_traits>

#include "agents/pipeline/internal/toml_file.h"

namespace kvcomm::pipeline {
namespace {

namespace fs = std::filesystem;

Status CheckKeys(const toml::table& table, std::initializer_list<std::string_view> allowed,
                 std::string_view where) {
  for (const auto& [key, value] : table) {
    if (std::find(allowed.begin(), allowed.end(), key.str()) == allowed.end())
      return InvalidArgument("{}: unknown key '{}'", where, key.str());
  }
  return Status();
}

template <typename T>
Result<std::optional<T>> Optional(const toml::table& table, std::string_view key,
                                  std::string_view where, std::string_view type) {
  const toml::node* node = table.get(key);
  if (!node) return std::optional<T>();
  // toml++ reads 1 as true; a flag must be written true or false.
  std::optional<T> value;
  if constexpr (std::is_same_v<T, bool>) {
    value = node->value_exact<bool>();
  } else {
    value = node->value<T>();
  }
  if (!value) return InvalidArgument("{}: '{}' must be {}", where, key, type);
  return std::optional<T>(*value);
}

Result<std::string> String(const toml::table& table, std::string_view key, std::string_view where,
                           bool required = false) {
  KVCOMM_ASSIGN_OR_RETURN(auto value, Optional<std::string>(table, key, where, "a string"));
  if (!value && required) return InvalidArgument("{}: missing '{}'", where, key);
  return value.value_or("");
}

Result<std::vector<std::string>> Strings(const toml::table& table, std::string_view key,
                                         std::string_view where) {
  std::vector<std::string> out;
  const toml::node* node = table.get(key);
  if (!node) return out;
  const toml::array* list = node->as_array();
  if (!list) return InvalidArgument("{}: '{}' must be a list of strings", where, key);
  for (const auto& item : *list) {
    auto value = item.value<std::string>();
    if (!value) return InvalidArgument("{}: '{}' must be a list of strings", where, key);
    out.push_back(*value);
  }
  return out;
}

Result<int64_t> Integer(const toml::table& table, std::string_view key, std::string_view where,
                        int64_t fallback, int64_t min, int64_t max) {
  KVCOMM_ASSIGN_OR_RETURN(auto value, Optional<int64_t>(table, key, where, "an integer"));
  if (!value) return fallback;
  if (*value < min || *value > max)
    return InvalidArgument("{}: '{}' = {} is not in [{}, {}]", where, key, *value, min, max);
  return *value;
}

Result<Topology> ParseTopology(const std::string& name, std::string_view where) {
  if (name == "single") return Topology::kSingle;
  if (name == "chain") return Topology::kChain;
  if (name == "rounds") return Topology::kRounds;
  if (name == "dag") return Topology::kDag;
  return InvalidArgument("{}: unknown topology '{}' (single, chain, rounds or dag)", where, name);
}

std::string Resolve(const fs::path& dir, const std::string& path) {
  return fs::path(path).is_absolute() ? path : (dir / path).lexically_normal().string();
}

Result<PipelineAgentSpec> ParseAgent(const toml::table& table, std::string_view where) {
  KVCOMM_RETURN_IF_ERROR(CheckKeys(table,
                                   {"id", "role", "template", "model", "worker", "temperature",
                                    "top_p", "seed", "max_reply_tokens", "sees"},
                                   where));
  PipelineAgentSpec agent;
  KVCOMM_ASSIGN_OR_RETURN(agent.id, String(table, "id", where, /*required=*/true));
  const std::string at = fmt::format("{} ('{}')", where, agent.id);
  KVCOMM_ASSIGN_OR_RETURN(agent.role, String(table, "role", at));
  KVCOMM_ASSIGN_OR_RETURN(agent.template_id, String(table, "template", at));
  KVCOMM_ASSIGN_OR_RETURN(agent.model, String(table, "model", at));
  KVCOMM_ASSIGN_OR_RETURN(agent.worker, String(table, "worker", at));
  KVCOMM_ASSIGN_OR_RETURN(auto temperature, Optional<double>(table, "temperature", at, "a number"));
  KVCOMM_ASSIGN_OR_RETURN(auto top_p, Optional<double>(table, "top_p", at, "a number"));
  agent.sampling.temperature = static_cast<float>(temperature.value_or(0.0));
  agent.sampling.top_p = static_cast<float>(top_p.value_or(1.0));
  KVCOMM_ASSIGN_OR_RETURN(auto seed, Integer(table, "seed", at, 0, 0, INT64_MAX));
  agent.sampling.seed = static_cast<uint64_t>(seed);
  if (Status valid = agent.sampling.Validate(); !valid.ok())
    return InvalidArgument("{}: {}", at, valid.message());
  KVCOMM_ASSIGN_OR_RETURN(agent.max_reply_tokens,
                          Integer(table, "max_reply_tokens", at, 24, 1, 4096));
  if (!agent.worker.empty() && !agent.model.empty())
    return InvalidArgument("{}: give 'model' (run here) or 'worker' (run there), not both", at);
  return agent;
}

// Resolves `sees` ids to indices and checks the graph: known ids, no self edges, no cycles,
// and the answering (last) agent is read by no one.
Status BindEdges(const std::vector<std::vector<std::string>>& sees, PipelineSpec& spec,
                 std::string_view where) {
  std::map<std::string, int> index;
  for (size_t a = 0; a < spec.agents.size(); ++a) index[spec.agents[a].id] = static_cast<int>(a);
  const bool dag = spec.topology == Topology::kDag;
  for (size_t a = 0; a < spec.agents.size(); ++a) {
    if (!dag && !sees[a].empty())
      return InvalidArgument("{}: agent '{}' has 'sees', which only topology 'dag' uses", where,
                             spec.agents[a].id);
    for (const auto& id : sees[a]) {
      auto it = index.find(id);
      if (it == index.end())
        return InvalidArgument("{}: agent '{}' sees unknown agent '{}'", where, spec.agents[a].id,
                               id);
      if (it->second == static_cast<int>(a))
        return InvalidArgument("{}: agent '{}' sees itself", where, id);
      if (it->second + 1 == static_cast<int>(spec.agents.size()))
        return InvalidArgument("{}: agent '{}' sees '{}', the last agent, who answers", where,
                               spec.agents[a].id, id);
      spec.agents[a].sees.push_back(it->second);
    }
  }
  if (!dag) return Status();
  // Kahn's algorithm: an agent that never becomes ready is on a cycle.
  std::vector<bool> done(spec.agents.size(), false);
  for (size_t finished = 0; finished < spec.agents.size();) {
    const size_t before = finished;
    for (size_t a = 0; a < spec.agents.size(); ++a) {
      const auto& edges = spec.agents[a].sees;
      if (!done[a] && std::all_of(edges.begin(), edges.end(), [&](int s) { return done[s]; })) {
        done[a] = true;
        ++finished;
      }
    }
    if (finished == before) {
      for (size_t a = 0; a < spec.agents.size(); ++a)
        if (!done[a])
          return InvalidArgument("{}: the agents' 'sees' form a cycle through '{}'", where,
                                 spec.agents[a].id);
    }
  }
  return Status();
}

Result<PipelineSpec> ParsePipeline(const toml::table& root, const std::string& path) {
  KVCOMM_RETURN_IF_ERROR(
      CheckKeys(root,
                {"name", "description", "templates", "tasks", "limit", "scoring", "topology",
                 "rounds", "bases_after_reply", "true_context_anchors", "models", "agents"},
                path));
  const fs::path dir = fs::path(path).parent_path();
  PipelineSpec spec;
  spec.path = path;
  KVCOMM_ASSIGN_OR_RETURN(spec.name, String(root, "name", path, /*required=*/true));
  KVCOMM_ASSIGN_OR_RETURN(spec.description, String(root, "description", path));
  KVCOMM_ASSIGN_OR_RETURN(spec.templates, String(root, "templates", path, /*required=*/true));
  spec.templates = Resolve(dir, spec.templates);
  KVCOMM_ASSIGN_OR_RETURN(spec.tasks, Strings(root, "tasks", path));
  if (spec.tasks.empty()) return InvalidArgument("{}: 'tasks' must list at least one file", path);
  for (auto& file : spec.tasks) file = Resolve(dir, file);
  KVCOMM_ASSIGN_OR_RETURN(spec.limit, Integer(root, "limit", path, 0, 0, INT64_MAX));
  KVCOMM_ASSIGN_OR_RETURN(auto scoring, String(root, "scoring", path));
  if (scoring == "exact" || scoring == "none") {
    spec.scored = scoring == "exact";
  } else if (!scoring.empty()) {
    return InvalidArgument("{}: unknown scoring '{}' (exact or none)", path, scoring);
  }
  KVCOMM_ASSIGN_OR_RETURN(auto topology, String(root, "topology", path));
  if (!topology.empty()) {
    KVCOMM_ASSIGN_OR_RETURN(spec.topology, ParseTopology(topology, path));
  }
  KVCOMM_ASSIGN_OR_RETURN(int64_t rounds, Integer(root, "rounds", path, 0, 1, 16));
  spec.rounds = static_cast<int>(rounds);
  KVCOMM_ASSIGN_OR_RETURN(auto bases_after_reply,
                          Optional<bool>(root, "bases_after_reply", path, "true or false"));
  spec.bases_after_reply = bases_after_reply.value_or(false);
  KVCOMM_ASSIGN_OR_RETURN(auto true_context_anchors,
                          Optional<bool>(root, "true_context_anchors", path, "true or false"));
  spec.true_context_anchors = true_context_anchors.value_or(false);

  if (const toml::node* models = root.get("models")) {
    if (!models->is_table()) return InvalidArgument("{}: 'models' must be a table", path);
    for (const auto& [id, dir_node] : *models->as_table()) {
      auto model_dir = dir_node.value<std::string>();
      if (!model_dir)
        return InvalidArgument("{}: models.{} must be a directory path", path, id.str());
      spec.models.emplace(std::string(id.str()), Resolve(dir, *model_dir));
    }
  }
  const toml::array* agents = root["agents"].as_array();
  if (!agents || agents->empty() || agents->size() > 64)
    return InvalidArgument("{}: '[[agents]]' must list 1 to 64 agents", path);
  std::vector<std::vector<std::string>> sees;
  std::set<std::string> ids;
  for (size_t i = 0; i < agents->size(); ++i) {
    const std::string where = fmt::format("{}: agents #{}", path, i + 1);
    const toml::table* table = (*agents)[i].as_table();
    if (!table) return InvalidArgument("{}: not a table", where);
    KVCOMM_ASSIGN_OR_RETURN(auto agent, ParseAgent(*table, where));
    if (!ids.insert(agent.id).second)
      return InvalidArgument("{}: duplicate agent id '{}'", where, agent.id);
    if (agent.worker.empty()) {
      if (agent.model.empty() && spec.models.size() == 1) agent.model = spec.models.begin()->first;
      if (!spec.models.contains(agent.model))
        return InvalidArgument("{} ('{}'): model '{}' is not in [models]", where, agent.id,
                               agent.model);
    }
    KVCOMM_ASSIGN_OR_RETURN(auto edges, Strings(*table, "sees", where));
    sees.push_back(std::move(edges));
    spec.agents.push_back(std::move(agent));
  }
  if (spec.topology == Topology::kSingle && spec.agents.size() != 1)
    return InvalidArgument("{}: topology 'single' needs exactly one agent", path);
  if (spec.topology == Topology::kRounds && spec.agents.size() < 2)
    return InvalidArgument("{}: topology 'rounds' needs at least two agents", path);
  KVCOMM_RETURN_IF_ERROR(BindEdges(sees, spec, path));
  return spec;
}

}  // namespace

Result<PipelineSpec> LoadPipeline(const std::string& path) {
  KVCOMM_ASSIGN_OR_RETURN(auto root, internal::ParseTomlFile(path));
  return ParsePipeline(root, path);
}

Result<Task> BindTask(const PipelineSpec& spec, Task task, const TemplateSet& templates) {
  if (task.agents.size() != spec.agents.size())
    return InvalidArgument("task '{}' has {} agents; pipeline '{}' has {}", task.id,
                           task.agents.size(), spec.name, spec.agents.size());
  for (size_t a = 0; a < task.agents.size(); ++a) {
    const PipelineAgentSpec& agent = spec.agents[a];
    AgentSpec& bound = task.agents[a];
    if (!agent.role.empty()) bound.role = agent.role;
    if (!agent.template_id.empty()) bound.template_id = agent.template_id;
    bound.sees = agent.sees;
    const std::string& template_id =
        bound.template_id.empty() ? task.template_id : bound.template_id;
    auto tmpl = templates.find(template_id);
    if (tmpl == templates.end())
      return InvalidArgument("pipeline '{}', agent '{}': unknown template '{}'", spec.name,
                             agent.id, template_id);
    if (!tmpl->second.roles.contains(bound.role))
      return InvalidArgument("pipeline '{}', agent '{}': template '{}' has no role '{}'", spec.name,
                             agent.id, template_id, bound.role);
  }
  if (spec.topology) task.topology = *spec.topology;
  if (spec.rounds > 0) task.rounds = spec.rounds;
  if (spec.scored) task.scored = *spec.scored;
  return task;
}

}  // namespace kvcomm::pipeline
