//! Which hash functions a configuration names: the plugin search path (`[plugins] dirs`, then
//! the defaults) and resolving `[ring] hash` to a compiled-in hash or a plugin, checked by
//! placing the configured replicas with it.

use std::path::PathBuf;
use std::sync::Arc;

use lb_balance::hash::RingHash;
use lb_balance::plugin;

use super::load::ConfigError;
use super::sections::Config;

impl Config {
    /// The plugin search path: `[plugins] dirs`, then the defaults of [`plugin::search_path`].
    pub(crate) fn plugin_dirs(&self) -> Vec<PathBuf> {
        let configured: Vec<PathBuf> = self
            .plugins
            .dirs
            .iter()
            .map(|d| self.base_dir.join(d))
            .collect();
        plugin::search_path(&configured)
    }

    /// The hash functions `[ring] hash` names — compiled in, or a plugin loaded from the plugin
    /// search path — checked by building the configured ring with them.
    pub(crate) fn resolve_hash(&self) -> Result<Arc<dyn RingHash>, ConfigError> {
        self.resolve_hash_in(&self.plugin_dirs())
    }

    /// [`Config::resolve_hash`] with plugins looked up in `dirs` (a running `lb` keeps the
    /// directories it started with: which code it may load changes only with a restart).
    pub(crate) fn resolve_hash_in(
        &self,
        dirs: &[PathBuf],
    ) -> Result<Arc<dyn RingHash>, ConfigError> {
        let name = self.ring.hash.get_ref();
        let hash = plugin::resolve_any(name, dirs)
            .map_err(|e| self.at(self.ring.hash.span(), e.to_string()))?;
        self.check_placement(Arc::clone(&hash))
            .map_err(|e| self.at(self.span_of(&e), e.to_string()))?;
        Ok(hash)
    }
}
