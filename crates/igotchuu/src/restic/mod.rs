//! restic: its output format (`parse`) and what it means for the run (`output`), running it
//! (`run`), keeping it alive to clean up when igotchuu dies (`drain`) and removing the locks it
//! could not (`unlock`).
pub mod drain;
pub mod output;
pub mod parse;
pub mod run;
pub mod unlock;
