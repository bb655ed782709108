//! The body the batching client builds its responses around: [`PipeBody`], the proxy body's
//! [`Source`](crate::data::body::Source) — whole when it came with its head, else streamed from
//! the connection's task. What the client hands over is a [`ProxyBody`] of it: the one body type
//! `lb` answers its clients with ([`crate::data::body`]).

pub(crate) use crate::data::body::ProxyBody;
pub(crate) use crate::data::body::Source as PipeBody;
