"""The model zoo (from_pretrained, save_pretrained, push_to_hub): not implemented yet (issue 6)."""
