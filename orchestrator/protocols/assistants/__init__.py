"""The Assistants threads/runs protocol (OpenAI, Azure OpenAI, Azure AI Foundry classic agents):
its msgspec wire models, its endpoints, its SSE events, and the assistant synced to a registry."""
