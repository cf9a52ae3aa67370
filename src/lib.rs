//! loadbalancer: a synchronous HTTP/1.1 load balancer built from threads and channels.
//!
//! ```no_run
//! let config = loadbalancer::Config::default();
//! let running = loadbalancer::Balancer::start(config).expect("start");
//! println!("listening on {}", running.addr());
//! running.shutdown();
//! ```
//!
//! See `DESIGN.md`'s module map: [`config`] reads settings, [`pool`] picks backends by smooth
//! weighted round-robin, [`proxy`] forwards one request, [`http`] is the front end (a poller
//! thread and a worker pool) and [`server`] connects the two.

pub mod admin;
pub mod admission;
pub mod balance;
pub mod clock;
pub mod config;
pub mod filter;
pub mod http;
pub mod logging;
pub mod maintenance;
pub mod metrics;
pub mod percent;
pub mod proxy;
pub mod reload;
pub mod server;
pub mod start;
pub mod startup;
pub mod state;
pub mod supervise;
pub mod yielding;

pub use config::Config;
pub use start::{Balancer, Running};
pub use state::{ConfigLoader, Shared};
