"""A frozen copy of the enricher's rules as they were before the batch-shaped rewrite (issue 12).

Used only as the oracle of tests/enricher/test_old_vs_new.py: for the same input the new rules must
produce the same event content and content_hash (indicator values aside, whose salt is now derived
instead of random). Never imported by the product; never edited.
"""
