"""The composition root: ``wharf serve`` turns settings into listeners and runs them."""
