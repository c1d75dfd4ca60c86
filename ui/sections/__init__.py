"""The page's sections: each module builds its components (`build(ctx, page)`) and wires its events to
module-level handlers that take the AppContext first, so tests call them directly."""
