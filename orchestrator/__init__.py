"""MangaAssist reference chatbot and its traffic driver."""
