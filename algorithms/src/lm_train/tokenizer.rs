//! A GPT-2-style byte-level BPE tokenizer trained on the corpus with the `tokenizers` crate.
//!
//! Byte-level BPE starts from the 256 byte symbols, so any UTF-8 text encodes and decodes back
//! exactly (no unknown token, no normalisation). One special token, `<|endoftext|>` (id 0),
//! separates documents in training and doubles as BOS and EOS, as in GPT-2: the post-processor
//! puts it in front of the text when special tokens are asked for, so a prompt encoded with
//! specials starts the way every training document does.

use std::collections::HashSet;
use std::path::Path;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use super::error::{LmTrainError, Result};

/// The document separator, BOS and EOS token.
pub const END_OF_TEXT: &str = "<|endoftext|>";

/// The smallest vocabulary: the 256 byte symbols plus `<|endoftext|>`.
pub const MIN_VOCAB_SIZE: usize = 257;

fn tok_err(e: impl std::fmt::Display) -> LmTrainError {
    LmTrainError::Tokenizer(e.to_string())
}

/// Trains a byte-level BPE tokenizer of (at most) `vocab_size` ids on `docs`.
///
/// Fewer ids result when the documents offer fewer pairs to merge (pairs seen once are not
/// merged); read the size back with `get_vocab_size(true)`. Training is deterministic: the
/// same documents give the same merges.
pub fn train_bpe(docs: &[String], vocab_size: usize) -> Result<Tokenizer> {
    if vocab_size < MIN_VOCAB_SIZE {
        return Err(LmTrainError::Settings(format!(
            "vocab size {vocab_size} is too small: byte-level BPE needs at least \
             {MIN_VOCAB_SIZE} ids (256 bytes + {END_OF_TEXT})"
        )));
    }
    if docs.is_empty() {
        return Err(LmTrainError::Corpus(
            "no training documents to learn the tokenizer from".into(),
        ));
    }
    // No prefix space: encoding must not change the text, so decode(encode(s)) == s.
    let byte_level = ByteLevel::new(false, true, true);
    let mut tokenizer = Tokenizer::new(BPE::default());
    tokenizer.with_pre_tokenizer(Some(byte_level));
    tokenizer.with_decoder(Some(ByteLevelDecoder::new(false, true, true)));
    let alphabet: HashSet<char> = ByteLevel::alphabet().into_iter().collect();
    let trainer = BpeTrainer::builder()
        .vocab_size(vocab_size)
        .min_frequency(2)
        .special_tokens(vec![AddedToken::from(END_OF_TEXT, true)])
        .initial_alphabet(alphabet)
        .show_progress(false)
        .build();
    let mut trainer = TrainerWrapper::BpeTrainer(trainer);
    tokenizer
        .train(&mut trainer, docs.iter())
        .map_err(tok_err)?;
    let eot = end_of_text_id(&tokenizer)?;
    let template = TemplateProcessing::builder()
        .try_single(format!("{END_OF_TEXT} $A"))
        .map_err(tok_err)?
        .try_pair(format!("{END_OF_TEXT} $A {END_OF_TEXT} $B:1"))
        .map_err(tok_err)?
        .special_tokens(vec![(END_OF_TEXT, eot)])
        .build()
        .map_err(tok_err)?;
    tokenizer.with_post_processor(Some(template));
    Ok(tokenizer)
}

/// Loads a `tokenizer.json` (e.g. the draft's, so a verifier shares its vocabulary) and checks
/// that it has the `<|endoftext|>` token the data pipeline needs.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let file = if path.is_dir() {
        path.join("tokenizer.json")
    } else {
        path.to_path_buf()
    };
    if !file.is_file() {
        return Err(LmTrainError::io(
            &file,
            std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
        ));
    }
    let tokenizer = Tokenizer::from_file(&file).map_err(|e| LmTrainError::InvalidFile {
        what: "tokenizer.json",
        path: file.clone(),
        reason: e.to_string(),
    })?;
    end_of_text_id(&tokenizer).map_err(|_| LmTrainError::InvalidFile {
        what: "tokenizer.json",
        path: file,
        reason: format!("it has no `{END_OF_TEXT}` token to separate documents"),
    })?;
    Ok(tokenizer)
}

/// The id of `<|endoftext|>`.
pub fn end_of_text_id(tokenizer: &Tokenizer) -> Result<u32> {
    tokenizer
        .token_to_id(END_OF_TEXT)
        .ok_or_else(|| tok_err(format!("the tokenizer has no `{END_OF_TEXT}` token")))
}

/// Encodes documents into one token stream, each document preceded by `<|endoftext|>` and the
/// stream closed by one: `[eot] d0 [eot] d1 … [eot]`.
pub fn encode_documents(tokenizer: &Tokenizer, docs: &[String]) -> Result<Vec<u32>> {
    let eot = end_of_text_id(tokenizer)?;
    let encodings = tokenizer
        .encode_batch(docs.to_vec(), false)
        .map_err(tok_err)?;
    let mut stream = Vec::with_capacity(encodings.iter().map(|e| e.len() + 1).sum::<usize>() + 1);
    for enc in &encodings {
        stream.push(eot);
        stream.extend_from_slice(enc.get_ids());
    }
    stream.push(eot);
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs() -> Vec<String> {
        [
            "The quick brown fox jumps over the lazy dog.",
            "A stitch in time saves nine.",
            "The early bird catches the worm; the second mouse gets the cheese.",
        ]
        .iter()
        .cycle()
        .take(30)
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn trains_and_round_trips_any_text() {
        let tok = train_bpe(&docs(), 300).unwrap();
        assert!(tok.get_vocab_size(true) <= 300);
        assert_eq!(end_of_text_id(&tok).unwrap(), 0);
        for text in ["the fox", "Ünïcödé ✓ 漢字 🦀", "\ttabs\n\nand  spaces ", ""] {
            let ids = tok.encode(text, false).unwrap();
            assert_eq!(tok.decode(ids.get_ids(), false).unwrap(), text);
        }
        let with_bos = tok.encode("the fox", true).unwrap();
        assert_eq!(with_bos.get_ids()[0], 0);
        // Merges were learnt: a frequent word takes fewer tokens than bytes.
        assert!(tok.encode(" the", false).unwrap().len() < 3);
    }

    #[test]
    fn stream_separates_documents() {
        let tok = train_bpe(&docs(), 300).unwrap();
        let stream = encode_documents(&tok, &["ab".into(), "cd".into()]).unwrap();
        assert_eq!(stream.first(), Some(&0));
        assert_eq!(stream.last(), Some(&0));
        assert_eq!(stream.iter().filter(|&&t| t == 0).count(), 3);
    }

    #[test]
    fn rejects_tiny_vocab() {
        assert!(train_bpe(&docs(), 100).is_err());
    }
}
