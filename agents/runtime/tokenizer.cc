#include "agents/runtime/tokenizer.h"

#include <sentencepiece_processor.h>

namespace kvcomm::runtime {

Tokenizer::Tokenizer() : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}
Tokenizer::~Tokenizer() = default;

Result<std::unique_ptr<Tokenizer>> Tokenizer::Load(const std::string& model_path) {
  std::unique_ptr<Tokenizer> tokenizer(new Tokenizer());
  auto status = tokenizer->processor_->Load(model_path);
  if (!status.ok())
    return InvalidArgument("cannot load tokenizer '{}': {}", model_path, status.ToString());
  return tokenizer;
}

Result<std::vector<int32_t>> Tokenizer::Encode(const std::string& text) const {
  std::vector<int> ids;
  auto status = processor_->Encode(text, &ids);
  if (!status.ok()) return InvalidArgument("cannot tokenize text: {}", status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

Result<std::string> Tokenizer::Decode(const std::vector<int32_t>& ids) const {
  std::vector<int> in(ids.begin(), ids.end());
  for (int id : in) {
    if (id < 0 || id >= processor_->GetPieceSize())
      return InvalidArgument("token id {} is outside the vocabulary", id);
  }
  std::string text;
  auto status = processor_->Decode(in, &text);
  if (!status.ok()) return InvalidArgument("cannot detokenize: {}", status.ToString());
  return text;
}

int32_t Tokenizer::vocab_size() const { return processor_->GetPieceSize(); }
int32_t Tokenizer::bos_id() const { return processor_->bos_id(); }
int32_t Tokenizer::eos_id() const { return processor_->eos_id(); }

}  // namespace kvcomm::runtime
