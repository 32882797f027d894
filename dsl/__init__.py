"""Textual front end: the .dd and .dcl notations."""
