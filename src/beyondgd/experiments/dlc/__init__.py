"""Deep Loss Convexification reproductions: dlc-toy, dlc-registration, dlc-classify.

Importing the package registers all three."""

from beyondgd.experiments.dlc import classify, registration, toy  # noqa: F401
