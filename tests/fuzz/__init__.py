"""Random models as tests (issue 20): see strategies.py and the test modules."""
