"""Offline evaluation of the MangaAssist chatbot: the golden dataset (spec §11) and its checks."""
