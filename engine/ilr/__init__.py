"""The ILR (Individualised Learner Record): the XML file ESFA collects, made from ILR items."""
