//! restic: its output format (`parse`) and what it means for the run (`output`), running it
//! (`run`), its maintenance commands (`command`: forget, prune, check), keeping it alive to clean
//! up when igotchuu dies (`drain`), removing the locks it could not (`unlock`), forgetting a
//! snapshot taken from a broken source (`forget`), its version (`version`) and the feature flags
//! that depend on it
//! (`features`).
pub mod command;
pub mod drain;
pub mod features;
pub mod forget;
pub mod output;
pub mod parse;
pub mod run;
pub mod unlock;
pub mod version;
