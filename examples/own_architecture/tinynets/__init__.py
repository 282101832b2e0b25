"""tinynets: a small ResNet-like network of one's own, as a user's project has one (the README's
example of an architecture from your own code, and the tests' own architecture)."""
