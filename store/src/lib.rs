//! genas-store: what genas *remembers*.
//!
//! Will own the sled archive (runs, candidates by content id, scores, the controller state
//! committed atomically with each result, teachers, weights, calibration tables, a versioned
//! schema) and the formats a winner leaves in (JSON spec, Hugging Face config + safetensors,
//! a standalone PyTorch module). Nothing is implemented here yet: the archive lands with the
//! search controller (issue 5) and the exports with issue 6.
//!
//! It knows `genas-space` types (what it stores) but must not know how candidates are scored
//! or chosen.
