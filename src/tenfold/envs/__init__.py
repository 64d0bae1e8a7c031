"""Environments with the gymnasium API, and scripted or heuristic experts."""
