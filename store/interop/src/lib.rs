//! genas-interop: the ecosystem's formats, in and out.
//!
//! Owns Hugging Face checkpoints read as teachers (`pretrained`: Llama, GPT-2, GPT-Neo,
//! GPTBigCode, into an engine `Model` computing the same function), the formats a winner
//! leaves in (`export`: JSON, the standalone PyTorch module `model.py`, Hugging Face native
//! families or `GenasForCausalLM`, each with `genas_check.py`), the tensor names each family
//! uses (`names`: one table per family, read by import and export alike), an engine model's
//! tensors as those formats take them (`tensors`) and the PyTorch runner's Python
//! (`RUNNER_PY`), which trains through `model.py` on a GPU.
//!
//! It knows the engine's models and parameter names; it must not know data sets, teachers'
//! soft targets, archives or searches.

pub mod export;
pub mod names;
pub mod pretrained;
pub mod tensors;

pub use tensors::model_tensors;

/// The PyTorch runner: one evaluation job (or teacher training, or final distillation) read
/// from a directory, trained through `model.py` with genas's recipe, its result written back.
pub const RUNNER_PY: &str = include_str!("runner/runner.py");
