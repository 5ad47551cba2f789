package engine

// emit hands an event to the plugins. This no-op stands in for the plugin
// engineer's implementation on the admin branch; the file is deleted at
// merge, where the real emit replaces it.
func (e *Engine) emit(Event) {}
