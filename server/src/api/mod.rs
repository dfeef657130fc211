//! The protocol doors: parsing and encoding only; the service decides.

#[cfg(not(madsim))]
mod calendar;
#[cfg(not(madsim))]
pub mod http;
#[cfg(not(madsim))]
mod ical;
pub(crate) mod json;
pub(crate) mod native;
#[cfg(not(madsim))]
mod web;
#[cfg(not(madsim))]
pub(crate) mod ws;
