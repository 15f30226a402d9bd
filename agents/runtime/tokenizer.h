// Tokenizer: a sentencepiece model (tokenizer.model) through Debian's libsentencepiece.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace kvcomm::runtime {

class Tokenizer {
 public:
  static Result<std::unique_ptr<Tokenizer>> Load(const std::string& model_path);
  ~Tokenizer();

  Result<std::vector<int32_t>> Encode(const std::string& text) const;
  Result<std::string> Decode(const std::vector<int32_t>& ids) const;
  int32_t vocab_size() const;
  int32_t bos_id() const;  // -1 if none
  int32_t eos_id() const;  // -1 if none

 private:
  Tokenizer();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace kvcomm::runtime
