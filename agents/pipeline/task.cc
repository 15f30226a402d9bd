#include "agents/pipeline/task.h"

#include <algorithm>
#include <cassert>
#include <cctype>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agents/pipeline/internal/toml_file.h"

namespace kvcomm::pipeline {
namespace {

Result<std::string> Piece(const toml::table& table, std::string_view key, std::string_view where) {
  auto value = table[key].value<std::string>();
  if (!value) return InvalidArgument("{}: missing string '{}'", where, key);
  if (value->empty() || value->back() != '\n')
    return InvalidArgument("{}: '{}' must end with a newline", where, key);
  return *value;
}

Result<PromptTemplate> ParseTemplate(const toml::table& table, std::string_view where) {
  PromptTemplate t;
  auto id = table["id"].value<std::string>();
  if (!id || id->empty()) return InvalidArgument("{}: missing 'id'", where);
  t.id = *id;
  const std::string at = fmt::format("{} (template '{}')", where, t.id);
  KVCOMM_ASSIGN_OR_RETURN(t.notes, Piece(table, "notes", at));
  KVCOMM_ASSIGN_OR_RETURN(t.input, Piece(table, "input", at));
  KVCOMM_ASSIGN_OR_RETURN(t.document, Piece(table, "document", at));
  KVCOMM_ASSIGN_OR_RETURN(t.message, Piece(table, "message", at));
  KVCOMM_ASSIGN_OR_RETURN(t.cue, Piece(table, "cue", at));
  const toml::table* roles = table["roles"].as_table();
  if (!roles || roles->empty()) return InvalidArgument("{}: no roles", at);
  for (const auto& [name, node] : *roles) {
    const toml::table* role = node.as_table();
    const std::string role_at = fmt::format("{} role '{}'", at, name.str());
    if (!role) return InvalidArgument("{}: not a table", role_at);
    RoleText text;
    KVCOMM_ASSIGN_OR_RETURN(text.header, Piece(*role, "header", role_at));
    KVCOMM_ASSIGN_OR_RETURN(text.instruction, Piece(*role, "instruction", role_at));
    t.roles.emplace(std::string(name.str()), std::move(text));
  }
  return t;
}

Result<Topology> ParseTopology(const std::string& name) {
  if (name == "single") return Topology::kSingle;
  if (name == "chain") return Topology::kChain;
  if (name == "rounds") return Topology::kRounds;
  return InvalidArgument("unknown topology '{}' (single, chain or rounds)", name);
}

Result<std::string> String(const nlohmann::json& j, const char* key, bool required = true) {
  auto it = j.find(key);
  if (it == j.end()) {
    if (required) return InvalidArgument("missing field '{}'", key);
    return std::string();
  }
  if (!it->is_string()) return InvalidArgument("field '{}' must be a string", key);
  return it->get<std::string>();
}

}  // namespace

Result<TemplateSet> LoadTemplates(const std::string& path) {
  KVCOMM_ASSIGN_OR_RETURN(auto root, internal::ParseTomlFile(path));
  const toml::array* list = root["template"].as_array();
  if (!list || list->empty()) return InvalidArgument("{}: no [[template]] entries", path);
  TemplateSet set;
  for (size_t i = 0; i < list->size(); ++i) {
    const toml::table* table = (*list)[i].as_table();
    const std::string where = fmt::format("{}: template #{}", path, i + 1);
    if (!table) return InvalidArgument("{}: not a table", where);
    KVCOMM_ASSIGN_OR_RETURN(auto t, ParseTemplate(*table, where));
    std::string id = t.id;
    if (!set.emplace(id, std::move(t)).second)
      return InvalidArgument("{}: duplicate template id '{}'", where, id);
  }
  return set;
}

Result<Task> ParseTask(const std::string& json_line, const TemplateSet& templates) {
  nlohmann::json j = nlohmann::json::parse(json_line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("not a JSON object");
  Task task;
  KVCOMM_ASSIGN_OR_RETURN(task.id, String(j, "id"));
  KVCOMM_ASSIGN_OR_RETURN(task.type, String(j, "type"));
  KVCOMM_ASSIGN_OR_RETURN(task.template_id, String(j, "template"));
  KVCOMM_ASSIGN_OR_RETURN(auto topology, String(j, "topology"));
  KVCOMM_ASSIGN_OR_RETURN(task.topology, ParseTopology(topology));
  KVCOMM_ASSIGN_OR_RETURN(task.input, String(j, "input"));
  KVCOMM_ASSIGN_OR_RETURN(task.answer, String(j, "answer"));
  KVCOMM_ASSIGN_OR_RETURN(auto scorer, String(j, "scorer", /*required=*/false));
  if (!scorer.empty() && scorer != "exact" && scorer != "none")
    return InvalidArgument("task '{}': unknown scorer '{}' (exact or none)", task.id, scorer);
  task.scored = scorer != "none";
  if (auto rounds = j.find("rounds"); rounds != j.end()) {
    if (!rounds->is_number_integer() || rounds->get<int64_t>() < 1 || rounds->get<int64_t>() > 16)
      return InvalidArgument("task '{}': 'rounds' must be an integer in [1, 16]", task.id);
    task.rounds = rounds->get<int>();
  }
  auto it = templates.find(task.template_id);
  if (it == templates.end())
    return InvalidArgument("task '{}': unknown template '{}'", task.id, task.template_id);
  const PromptTemplate& tmpl = it->second;

  auto agents = j.find("agents");
  if (agents == j.end() || !agents->is_array() || agents->empty() || agents->size() > 64)
    return InvalidArgument("task '{}': 'agents' must be a list of 1 to 64 agents", task.id);
  for (const auto& a : *agents) {
    if (!a.is_object()) return InvalidArgument("task '{}': an agent is not an object", task.id);
    AgentSpec agent;
    KVCOMM_ASSIGN_OR_RETURN(agent.name, String(a, "name"));
    KVCOMM_ASSIGN_OR_RETURN(agent.role, String(a, "role"));
    KVCOMM_ASSIGN_OR_RETURN(agent.notes, String(a, "notes", /*required=*/false));
    if (agent.name.empty() || agent.name.find('\n') != std::string::npos)
      return InvalidArgument("task '{}': agent names must be one non-empty line", task.id);
    if (!tmpl.roles.contains(agent.role))
      return InvalidArgument("task '{}': template '{}' has no role '{}'", task.id, tmpl.id,
                             agent.role);
    task.agents.push_back(std::move(agent));
  }
  if (task.topology == Topology::kSingle && task.agents.size() != 1)
    return InvalidArgument("task '{}': topology 'single' needs exactly one agent", task.id);
  if (task.topology == Topology::kRounds && task.agents.size() < 2)
    return InvalidArgument("task '{}': topology 'rounds' needs at least two agents", task.id);
  if (auto docs = j.find("documents"); docs != j.end()) {
    if (!docs->is_array()) return InvalidArgument("task '{}': 'documents' must be a list", task.id);
    for (const auto& d : *docs) {
      if (!d.is_string()) return InvalidArgument("task '{}': documents must be strings", task.id);
      task.documents.push_back(d.get<std::string>());
    }
  }
  return task;
}

Result<std::vector<Task>> LoadTasks(const std::string& path, const TemplateSet& templates,
                                    int64_t limit) {
  std::ifstream in(path);
  if (!in) return Error(ErrorCode::kNotFound, "cannot open task file '{}'", path);
  std::vector<Task> tasks;
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto task = ParseTask(line, templates);
    if (!task.ok()) return InvalidArgument("{}:{}: {}", path, number, task.status().message());
    tasks.push_back(std::move(*task));
    if (limit > 0 && static_cast<int64_t>(tasks.size()) >= limit) break;
  }
  if (tasks.empty()) return InvalidArgument("{}: no tasks", path);
  return tasks;
}

std::vector<Turn> Schedule(const Task& task) {
  const int agents = static_cast<int>(task.agents.size());
  std::vector<Turn> turns;
  switch (task.topology) {
    case Topology::kSingle:
      turns.push_back({0, {}});
      break;
    case Topology::kChain:
      for (int i = 0; i < agents; ++i) {
        Turn turn{i, {}};
        for (int k = 0; k < i; ++k) turn.sees.push_back(k);
        turns.push_back(std::move(turn));
      }
      break;
    case Topology::kDag: {
      std::vector<int> turn_of(agents, -1);
      while (static_cast<int>(turns.size()) < agents) {
        const size_t before = turns.size();
        for (int a = 0; a < agents; ++a) {
          const auto& sees = task.agents[a].sees;
          if (turn_of[a] >= 0 ||
              !std::all_of(sees.begin(), sees.end(), [&](int s) { return turn_of[s] >= 0; }))
            continue;
          Turn turn{a, {}};
          for (int s : sees) turn.sees.push_back(turn_of[s]);
          turn_of[a] = static_cast<int>(turns.size());
          turns.push_back(std::move(turn));
          break;
        }
        assert(turns.size() > before);  // BindTask refuses cycles
        if (turns.size() == before) break;
      }
      break;
    }
    case Topology::kRounds: {
      std::vector<int> previous;
      for (int round = 0; round < task.rounds; ++round) {
        std::vector<int> current;
        for (int peer = 0; peer < agents - 1; ++peer) {
          Turn turn{peer, {}};
          for (int t : previous)
            if (turns[t].agent != peer) turn.sees.push_back(t);
          turns.push_back(std::move(turn));
          current.push_back(static_cast<int>(turns.size()) - 1);
        }
        previous = std::move(current);
      }
      turns.push_back({agents - 1, previous});
      break;
    }
  }
  return turns;
}

std::string NormalizeAnswer(std::string_view text) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
  };
  text = trim(text);
  while (!text.empty() && text.back() == '.') text.remove_suffix(1);
  std::string out(trim(text));
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

bool IsCorrect(const Task& task, std::string_view reply) {
  return task.scored && NormalizeAnswer(reply) == NormalizeAnswer(task.answer);
}

}  // namespace kvcomm::pipeline
