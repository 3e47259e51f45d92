"""Test helpers shipped with simrecorder (the DataStore contract suite)."""
