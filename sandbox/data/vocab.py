"""Code systems and value pools the generator draws from (shared constant dicts: never mutate them)."""

from __future__ import annotations

from typing import Any

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
CVX = "http://hl7.org/fhir/sid/cvx"
OBS_CAT = "http://terminology.hl7.org/CodeSystem/observation-category"
NPI = "http://hl7.org/fhir/sid/us-npi"
MRN = "urn:oid:2.16.840.1.113883.19.5"


def cc(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code, "display": display}], "text": display}


def category(code: str, display: str) -> list[dict[str, Any]]:
    return [{"coding": [{"system": OBS_CAT, "code": code, "display": display}]}]


VITAL_CAT = category("vital-signs", "Vital Signs")
LAB_CAT = category("laboratory", "Laboratory")
SOCIAL_CAT = category("social-history", "Social History")

# (code concept, low, high, unit, ucum code, decimals)
VITALS: list[tuple[dict[str, Any], float, float, str, str, int]] = [
    (cc(LOINC, "8867-4", "Heart rate"), 55, 105, "beats/minute", "/min", 0),
    (cc(LOINC, "9279-1", "Respiratory rate"), 12, 22, "breaths/minute", "/min", 0),
    (cc(LOINC, "8310-5", "Body temperature"), 36.1, 38.2, "Cel", "Cel", 1),
    (cc(LOINC, "29463-7", "Body weight"), 48, 120, "kg", "kg", 1),
    (cc(LOINC, "8302-2", "Body height"), 150, 195, "cm", "cm", 1),
    (cc(LOINC, "39156-5", "Body mass index"), 18, 38, "kg/m2", "kg/m2", 1),
    (cc(LOINC, "59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"), 92, 100, "%", "%", 0),
]
BP_CODE = cc(LOINC, "85354-9", "Blood pressure panel with all children optional")
BP_SYS = cc(LOINC, "8480-6", "Systolic blood pressure")
BP_DIA = cc(LOINC, "8462-4", "Diastolic blood pressure")

LABS: list[tuple[dict[str, Any], float, float, str, str, int]] = [
    (cc(LOINC, "2345-7", "Glucose [Mass/volume] in Serum or Plasma"), 70, 180, "mg/dL", "mg/dL", 0),
    (cc(LOINC, "2160-0", "Creatinine [Mass/volume] in Serum or Plasma"), 0.6, 1.6, "mg/dL", "mg/dL", 2),
    (cc(LOINC, "718-7", "Hemoglobin [Mass/volume] in Blood"), 11, 17, "g/dL", "g/dL", 1),
    (cc(LOINC, "6690-2", "Leukocytes [#/volume] in Blood"), 3.5, 11, "10*3/uL", "10*3/uL", 1),
    (cc(LOINC, "2951-2", "Sodium [Moles/volume] in Serum or Plasma"), 133, 147, "mmol/L", "mmol/L", 0),
    (cc(LOINC, "2823-3", "Potassium [Moles/volume] in Serum or Plasma"), 3.3, 5.3, "mmol/L", "mmol/L", 1),
]
LAB_PANEL = cc(LOINC, "24323-8", "Comprehensive metabolic 2000 panel - Serum or Plasma")
DR_LAB_CAT = [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "LAB"}]}]

SMOKING_CODE = cc(LOINC, "72166-2", "Tobacco smoking status")
SMOKING_VALUES = [
    cc(SNOMED, "266919005", "Never smoked tobacco"),
    cc(SNOMED, "8517006", "Ex-smoker"),
    cc(SNOMED, "449868002", "Smokes tobacco daily"),
]

CONDITIONS = [
    cc(SNOMED, "44054006", "Diabetes mellitus type 2"),
    cc(SNOMED, "38341003", "Hypertensive disorder"),
    cc(SNOMED, "195967001", "Asthma"),
    cc(SNOMED, "55822004", "Hyperlipidemia"),
    cc(SNOMED, "35489007", "Depressive disorder"),
    cc(SNOMED, "40055000", "Chronic sinusitis"),
    cc(SNOMED, "239873007", "Osteoarthritis of knee"),
    cc(SNOMED, "271737000", "Anemia"),
]
COND_CLINICAL = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]}
COND_RESOLVED = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "resolved"}]}
COND_VERIFIED = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": "confirmed"}]
}
COND_CAT = [
    {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-category", "code": "problem-list-item"}]}
]

MEDICATIONS = [
    ("860975", "metformin hydrochloride 500 MG Oral Tablet"),
    ("314076", "lisinopril 10 MG Oral Tablet"),
    ("617314", "atorvastatin 10 MG Oral Tablet"),
    ("745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler"),
    ("312940", "sertraline 50 MG Oral Tablet"),
    ("197361", "amlodipine 5 MG Oral Tablet"),
    ("310798", "hydrochlorothiazide 25 MG Oral Tablet"),
    ("198211", "simvastatin 40 MG Oral Tablet"),
]

ALLERGIES = [
    cc(SNOMED, "91936005", "Allergy to penicillin"),
    cc(SNOMED, "300913006", "Shellfish allergy"),
    cc(SNOMED, "418689008", "Allergy to grass pollen"),
    cc(SNOMED, "91935009", "Allergy to peanuts"),
]
ALLERGY_CLINICAL = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "code": "active"}]
}
ALLERGY_VERIFIED = {
    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "code": "confirmed"}]
}
REACTIONS = [cc(SNOMED, "271807003", "Eruption of skin"), cc(SNOMED, "267036007", "Dyspnea")]

VACCINES = [
    cc(CVX, "140", "Influenza, seasonal, injectable, preservative free"),
    cc(CVX, "208", "COVID-19, mRNA, LNP-S, PF, 30 mcg/0.3 mL dose"),
    cc(CVX, "115", "Tdap"),
    cc(CVX, "133", "Pneumococcal conjugate PCV 13"),
]

PROCEDURES = [
    cc(SNOMED, "73761001", "Colonoscopy"),
    cc(SNOMED, "36969009", "Placement of stent in coronary artery"),
    cc(SNOMED, "80146002", "Excision of appendix"),
    cc(SNOMED, "430193006", "Medication reconciliation"),
]

#: US Core's CarePlan category (``assess-plan``, the only one Oracle Health searches) and a SNOMED one
CAREPLAN_CAT = [
    cc("http://hl7.org/fhir/us/core/CodeSystem/careplan-category", "assess-plan", "Assessment and Plan of Treatment"),
    cc(SNOMED, "734163000", "Care plan"),
]
CAREPLAN_ACTIVITIES = [
    cc(SNOMED, "229065009", "Exercise therapy"),
    cc(SNOMED, "226234005", "Healthy diet"),
    cc(SNOMED, "710081004", "Smoking cessation therapy"),
]

DOC_TYPE = cc(LOINC, "11506-3", "Progress note")
DOC_CAT = [
    {
        "coding": [
            {
                "system": "http://hl7.org/fhir/us/core/CodeSystem/us-core-documentreference-category",
                "code": "clinical-note",
                "display": "Clinical Note",
            }
        ]
    }
]

ENC_CLASSES = [
    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "EMER", "display": "emergency"},
    {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP", "display": "inpatient encounter"},
]
ENC_TYPES = [
    cc(SNOMED, "185349003", "Encounter for check up"),
    cc(SNOMED, "185345009", "Encounter for symptom"),
    cc(SNOMED, "390906007", "Follow-up encounter"),
]

GIVEN_F = ["Ava", "Maria", "Grace", "Lena", "Sofia", "Ruth", "Nora", "Ines", "Amara", "Hana", "Clara", "Mei"]
GIVEN_M = ["Liam", "Omar", "Jonas", "Mateo", "Arjun", "Felix", "Kenji", "Tomas", "Samuel", "Diego", "Ivan", "Eli"]
FAMILY = [
    "Garcia",
    "Nguyen",
    "Okafor",
    "Schmidt",
    "Rossi",
    "Kowalski",
    "Haddad",
    "Tanaka",
    "Silva",
    "Novak",
    "Brennan",
    "Lindqvist",
    "Mensah",
    "Petrov",
    "Quinn",
    "Fischer",
    "Moreau",
    "Castillo",
    "Yilmaz",
    "Park",
]
CITIES = [
    ("Springfield", "IL", "62701"),
    ("Madison", "WI", "53703"),
    ("Salem", "OR", "97301"),
    ("Dover", "DE", "19901"),
]
STREETS = ["Oak St", "Maple Ave", "Cedar Ln", "Elm St", "Pine Rd", "Lakeview Dr"]
NOTE_REASONS = ["follow-up of chronic conditions", "cough and fever", "medication review", "annual wellness visit"]
NOTE_PLANS = ["continue current medications", "order labs and recheck in 3 months", "start lifestyle changes"]
