pub mod audit;
pub mod engine;
