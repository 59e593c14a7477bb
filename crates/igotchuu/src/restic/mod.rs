//! restic: its output format (`parse`) and what it means for the run (`output`), running it
//! (`run`), keeping it alive to clean up when igotchuu dies (`drain`), removing the locks it
//! could not (`unlock`), its version (`version`) and the feature flags that depend on it
//! (`features`); how it is started (`command`).
pub mod command;
pub mod drain;
pub mod features;
pub mod output;
pub mod parse;
pub mod run;
pub mod unlock;
pub mod version;
